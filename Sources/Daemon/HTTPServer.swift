public import FerrySystem
import Foundation
import NIOConcurrencyHelpers
public import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// What a listener tolerates from its clients. Every bound is per listener.
public struct HTTPServerLimits: Sendable {
    /// Connections open at once. At the limit a newcomer takes the place of the oldest connection
    /// that has not sent its request within `admissionGrace`; while there is none, up to a listen
    /// backlog's worth (4,096) wait, accepted and unread, and further ones are closed.
    public var maximumConnections: Int
    /// Bytes a request body may have (0: none; a request with a body is refused with 413).
    public var maximumBodyBytes: Int
    /// Time from accepting a connection to the end of its request (slow clients are dropped).
    /// The handler's own time is not limited: a mount may download a large bootstrap.
    public var requestTimeout: TimeAmount
    /// Time to write the response.
    public var writeTimeout: TimeAmount
    /// Time a new connection has to send its request before a newcomer may take its place when
    /// the listener is full (a client that connects and asks at once is never pushed out by a flood).
    public var admissionGrace: TimeAmount

    public init(maximumConnections: Int, maximumBodyBytes: Int, requestTimeout: TimeAmount = .seconds(10),
                writeTimeout: TimeAmount = .seconds(10), admissionGrace: TimeAmount = .milliseconds(500)) {
        self.maximumConnections = maximumConnections
        self.maximumBodyBytes = maximumBodyBytes
        self.requestTimeout = requestTimeout
        self.writeTimeout = writeTimeout
        self.admissionGrace = admissionGrace
    }

    /// The control socket: local clients (`ferry`, `curl --unix-socket`, containerd), small JSON
    /// bodies. Only root can connect (mode 0600), so the cap only bounds memory (a waiting
    /// connection costs a few KiB): high enough that a flood of local connections does not push
    /// out the operator's own requests; a second of grace on a loaded node.
    public static let controlSocket = HTTPServerLimits(maximumConnections: 4096, maximumBodyBytes: 1 << 20,
                                                       admissionGrace: .seconds(1))
    /// A TCP port anyone on the network may reach (metrics, peers): no bodies at all.
    public static let networkPort = HTTPServerLimits(maximumConnections: 512, maximumBodyBytes: 0)
}

/// A listening HTTP/1.1 server on SwiftNIO (its HTTP/1 codec): one request per connection,
/// answered by an async handler, with the bounds of `HTTPServerLimits`. Malformed requests are
/// answered 400 by NIO's codec and the connection closed; nothing a client sends reaches the
/// handler unparsed.
public final class HTTPListener: Sendable {
    private let channel: any Channel

    init(channel: any Channel) { self.channel = channel }

    /// Stops accepting; connections in progress finish.
    public func close() {
        channel.close(promise: nil)
    }

    /// Serves on an already bound and listening socket (ferryd binds its sockets itself, so a
    /// Unix socket's mode is set before it listens); NIO takes the descriptor over.
    /// `admit`, when given, is asked for each new connection's remote IP address; a connection it
    /// refuses is closed before anything is read or sent.
    public static func serve(listener: FerrySystem.FileDescriptor, limits: HTTPServerLimits,
                             admit: (@Sendable (_ remoteIP: String?) -> Bool)? = nil,
                             handler: @escaping @Sendable (ControlRequest) async -> ControlResponse) async throws -> HTTPListener {
        let connections = ConnectionTable(limit: limits.maximumConnections, grace: limits.admissionGrace,
                                          requestTimeout: limits.requestTimeout)
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            // Accept up to 64 connections per wake-up (NIO's default is 4): under a flood the
            // kernel's queue is drained before it fills (a Unix socket with a full queue refuses
            // a non-blocking connect at once: curl "Couldn't connect").
            .serverChannelOption(ChannelOptions.maxMessagesPerRead, value: 64)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AdmissionGate(connections: connections, limit: Int(UnixSocket.defaultBacklog)))
                }
            }
            .childChannelInitializer { channel in
                channel.closeFuture.whenComplete { _ in connections.remove(channel) }
                if let admit, !admit(channel.remoteAddress?.ipAddress) { return channel.close() }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try sync.addHandler(RequestHandler(limits: limits, connections: connections, handler: handler))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: false)
        let channel = try await bootstrap.withBoundSocket(listener.rawValue).get()
        // NIO listens again on a socket it takes over, with its default backlog of 128 and before
        // any `ChannelOptions.backlog` applies (that option is read only when NIO binds itself):
        // a Unix socket with 128 connections queued refuses a non-blocking connect at once (curl
        // "Couldn't connect", seen under the hostile-client test). Restore the full depth.
        do {
            try UnixSocket.setBacklog(listener)
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return HTTPListener(channel: channel)
    }
}

/// The open connections of one listener. At the limit a new connection is admitted by closing
/// the oldest one that has not finished sending its request although it has had the grace time to
/// (an idle or slow client), so clients that ask and go — `ferry`, a health check, Prometheus —
/// are served however many idle connections someone holds open. While no connection can make
/// room (all are answering, or all are younger than the grace), newcomers wait (`AdmissionGate`).
///
/// The table also holds each connection's deadline (its request's end, then its answer's
/// writing), and `closeExpired` — called a few times a second by the listener — closes those past
/// it. One sweep per listener instead of a timer per connection: cancelling one of NIO's
/// scheduled tasks searches the event loop's whole timer queue, so with thousands of connections
/// open every close cost a scan of thousands (a fifth of ferryd's time under a flood of
/// connect-and-reset clients, by `perf`).
final class ConnectionTable: Sendable {
    private struct Entry {
        var channel: any Channel
        var opened: NIODeadline
        var busy: Bool
        /// When the connection is closed unless it has ended by then (nil: the handler is working).
        var deadline: NIODeadline?
    }
    private let limit: Int
    private let grace: TimeAmount
    private let requestTimeout: TimeAmount
    private let entries = Mutex([ObjectIdentifier: Entry]())

    init(limit: Int, grace: TimeAmount, requestTimeout: TimeAmount = .hours(1)) {
        self.limit = limit
        self.grace = grace
        self.requestTimeout = requestTimeout
    }

    /// Admits `channel` if there is room or room can be made by closing an old waiting
    /// connection; false when `channel` has to wait.
    func admit(_ channel: any Channel, now: NIODeadline = .now()) -> Bool {
        let evicted = entries.withLock { entries -> (any Channel)?? in
            var victim: (any Channel)? = nil
            if entries.count >= limit {
                let oldEnough = now - grace
                guard let oldest = entries.filter({ !$0.value.busy && $0.value.opened <= oldEnough })
                        .min(by: { $0.value.opened < $1.value.opened }) else {
                    return .none
                }
                entries.removeValue(forKey: oldest.key)
                victim = oldest.value.channel
            }
            entries[ObjectIdentifier(channel)] = Entry(channel: channel, opened: now, busy: false, deadline: now + requestTimeout)
            return .some(victim)
        }
        guard let evicted else { return false }
        evicted?.close(promise: nil)
        return true
    }

    /// The connection's request is complete and being answered: never evicted from now on, and
    /// without a deadline while the handler works (a mount may download a large bootstrap).
    func markBusy(_ channel: any Channel) {
        entries.withLock { entries in
            entries[ObjectIdentifier(channel)]?.busy = true
            entries[ObjectIdentifier(channel)]?.deadline = nil
        }
    }

    /// The answer is being written: the connection is closed if that has not ended by `deadline`.
    func writing(_ channel: any Channel, deadline: NIODeadline) {
        entries.withLock { $0[ObjectIdentifier(channel)]?.deadline = deadline }
    }

    /// Closes (and forgets) every connection past its deadline; returns how many.
    @discardableResult
    func closeExpired(now: NIODeadline = .now()) -> Int {
        let expired = entries.withLock { entries -> [any Channel] in
            var expired: [any Channel] = []
            for (key, entry) in entries {
                if let deadline = entry.deadline, deadline <= now {
                    expired.append(entry.channel)
                    entries.removeValue(forKey: key)
                }
            }
            return expired
        }
        for channel in expired { channel.close(promise: nil) }
        return expired.count
    }

    func remove(_ channel: any Channel) {
        _ = entries.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

/// Sits on the listening channel, in front of NIO's accept handler: passes each accepted
/// connection on once `ConnectionTable` admits it. A connection that has to wait is held, in
/// arrival order (nothing of it is read yet), and admission is retried every few milliseconds.
/// Accepting never pauses: a Unix socket whose kernel queue is full refuses a connect at once,
/// which is what pausing did under a flood. At most `limit` connections wait (a listen backlog of
/// ferryd's own, as deep as the kernel's); a newcomer beyond that is closed.
final class AdmissionGate: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let connections: ConnectionTable
    private let limit: Int
    // Touched only on the listening channel's event loop.
    private var waiting: [any Channel] = []
    private var retry: Scheduled<Void>?
    private var sweep: RepeatedTask?

    /// How often connections past their deadline are looked for (deadlines are seconds long).
    static let sweepInterval = TimeAmount.milliseconds(200)

    init(connections: ConnectionTable, limit: Int) {
        self.connections = connections
        self.limit = limit
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let connections = self.connections
        sweep = context.eventLoop.scheduleRepeatedTask(initialDelay: Self.sweepInterval, delay: Self.sweepInterval) { _ in
            connections.closeExpired()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sweep?.cancel()
        sweep = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        if waiting.isEmpty && connections.admit(child) {
            context.fireChannelRead(wrapInboundOut(child))
            return
        }
        guard waiting.count < limit else {
            child.close(promise: nil)
            return
        }
        waiting.append(child)
        if retry == nil { scheduleRetry(context: context) }
    }

    private func scheduleRetry(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        retry = context.eventLoop.scheduleTask(in: .milliseconds(5)) {
            let (this, context) = bound.value
            this.retry = nil
            this.admitWaiting(context: context)
        }
    }

    private func admitWaiting(context: ChannelHandlerContext) {
        while let child = waiting.first {
            guard connections.admit(child) else { return scheduleRetry(context: context) }
            waiting.removeFirst()
            context.fireChannelRead(wrapInboundOut(child))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        retry?.cancel()
        retry = nil
        sweep?.cancel()
        sweep = nil
        for child in waiting { child.close(promise: nil) }
        waiting = []
        context.fireChannelInactive()
    }
}

/// Gathers one request (head and a bounded body), hands it to the async handler, writes the
/// response and closes. A request that is not complete within the request timeout, or a body
/// over the limit, ends the connection (the deadlines are kept and enforced by `ConnectionTable`).
final class RequestHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let limits: HTTPServerLimits
    private let connections: ConnectionTable
    private let handler: @Sendable (ControlRequest) async -> ControlResponse
    // Touched only on the channel's event loop.
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var answered = false

    init(limits: HTTPServerLimits, connections: ConnectionTable, handler: @escaping @Sendable (ControlRequest) async -> ControlResponse) {
        self.limits = limits
        self.connections = connections
        self.handler = handler
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        switch unwrapInboundIn(data) {
        case let .head(requestHead):
            head = requestHead
            let declared = requestHead.headers.first(name: "content-length").flatMap { Int($0) } ?? 0
            let chunked = requestHead.headers.contains(name: "transfer-encoding")
            if declared > limits.maximumBodyBytes || (chunked && limits.maximumBodyBytes == 0) {
                respond(context: context, .error("request body too large (at most \(limits.maximumBodyBytes) bytes here)", status: 413))
            }
        case var .body(buffer):
            guard body.count + buffer.readableBytes <= limits.maximumBodyBytes else {
                respond(context: context, .error("request body too large (at most \(limits.maximumBodyBytes) bytes here)", status: 413))
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head else { return }
            answered = true
            connections.markBusy(context.channel)
            let request = Self.request(from: head, body: body)
            let handler = self.handler
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            let channel = context.channel
            Task {
                // A GET whose client has gone (asked and hung up) is not worth answering: a flood
                // of `GET /metrics` + close otherwise renders the metrics for nobody, again and
                // again. Requests that change something are carried out whoever waits.
                if request.method == "GET" && !channel.isActive { return }
                let response = await handler(request)
                loop.execute {
                    let (this, context) = bound.value
                    this.write(context: context, response)
                }
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func respond(context: ChannelHandlerContext, _ response: ControlResponse) {
        answered = true
        write(context: context, response)
    }

    private func write(context: ChannelHandlerContext, _ response: ControlResponse) {
        guard context.channel.isActive else { return }
        connections.writing(context.channel, deadline: .now() + limits.writeTimeout)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: "close")
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    /// The request as the routes see it: path, decoded query, body.
    static func request(from head: HTTPRequestHead, body: [UInt8]) -> ControlRequest {
        let (path, query) = ControlHTTP.splitTarget(head.uri)
        return ControlRequest(method: head.method.rawValue, path: path, query: query, body: body)
    }
}
