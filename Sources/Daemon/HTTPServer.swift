public import FerrySystem
import Foundation
import NIOConcurrencyHelpers
public import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// What a listener tolerates from its clients. Every bound is per listener.
public struct HTTPServerLimits: Sendable {
    /// Connections open at once; more are closed as soon as they are accepted.
    public var maximumConnections: Int
    /// Bytes a request body may have (0: none; a request with a body is refused with 413).
    public var maximumBodyBytes: Int
    /// Time from accepting a connection to the end of its request (slow clients are dropped).
    /// The handler's own time is not limited: a mount may download a large bootstrap.
    public var requestTimeout: TimeAmount
    /// Time to write the response.
    public var writeTimeout: TimeAmount

    public init(maximumConnections: Int, maximumBodyBytes: Int, requestTimeout: TimeAmount = .seconds(10),
                writeTimeout: TimeAmount = .seconds(10)) {
        self.maximumConnections = maximumConnections
        self.maximumBodyBytes = maximumBodyBytes
        self.requestTimeout = requestTimeout
        self.writeTimeout = writeTimeout
    }

    /// The control socket: local clients (`ferry`, `curl --unix-socket`), small JSON bodies.
    public static let controlSocket = HTTPServerLimits(maximumConnections: 128, maximumBodyBytes: 1 << 20)
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
    public static func serve(listener: FerrySystem.FileDescriptor, limits: HTTPServerLimits,
                             handler: @escaping @Sendable (ControlRequest) async -> ControlResponse) throws -> HTTPListener {
        let connections = ConnectionTable()
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .childChannelInitializer { channel in
                guard connections.admit(channel, limit: limits.maximumConnections) else {
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in connections.remove(channel) }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try sync.addHandler(RequestHandler(limits: limits, connections: connections, handler: handler))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: false)
        let channel = try bootstrap.withBoundSocket(listener.rawValue).wait()
        return HTTPListener(channel: channel)
    }
}

/// The open connections of one listener. At the limit a new connection is admitted by closing
/// the oldest one that has not finished sending its request (an idle or slow client), so clients
/// that ask and go — `ferry`, a health check, Prometheus — are served however many idle
/// connections someone holds open; only when every connection is busy answering is a new one refused.
final class ConnectionTable: Sendable {
    private struct Entry {
        var channel: any Channel
        var opened: UInt64
        var busy: Bool
    }
    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var sequence: UInt64 = 0
    }
    private let state = Mutex(State())

    /// Admits `channel`, closing the oldest waiting connection if the table is full; false when
    /// every connection is busy.
    func admit(_ channel: any Channel, limit: Int) -> Bool {
        let evicted = state.withLock { s -> (any Channel)?? in
            var victim: (any Channel)? = nil
            if s.entries.count >= limit {
                guard let oldest = s.entries.filter({ !$0.value.busy }).min(by: { $0.value.opened < $1.value.opened }) else {
                    return .none
                }
                s.entries.removeValue(forKey: oldest.key)
                victim = oldest.value.channel
            }
            s.sequence += 1
            s.entries[ObjectIdentifier(channel)] = Entry(channel: channel, opened: s.sequence, busy: false)
            return .some(victim)
        }
        guard let evicted else { return false }
        evicted?.close(promise: nil)
        return true
    }

    /// The connection's request is complete and being answered: never evicted from now on.
    func markBusy(_ channel: any Channel) {
        state.withLock { $0.entries[ObjectIdentifier(channel)]?.busy = true }
    }

    func remove(_ channel: any Channel) {
        _ = state.withLock { $0.entries.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

/// Gathers one request (head and a bounded body), hands it to the async handler, writes the
/// response and closes. A request that is not complete within the request timeout, or a body
/// over the limit, ends the connection.
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
    private var deadline: Scheduled<Void>?

    init(limits: HTTPServerLimits, connections: ConnectionTable, handler: @escaping @Sendable (ControlRequest) async -> ControlResponse) {
        self.limits = limits
        self.connections = connections
        self.handler = handler
    }

    func channelActive(context: ChannelHandlerContext) {
        // Until the request is complete; the handler then takes as long as it needs (a mount may
        // download a large bootstrap), and writing the answer has a deadline of its own.
        deadline = closing(context.channel, after: limits.requestTimeout)
        context.fireChannelActive()
    }

    private func closing(_ channel: any Channel, after delay: TimeAmount) -> Scheduled<Void> {
        channel.eventLoop.scheduleTask(in: delay) { channel.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        context.fireChannelInactive()
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
            deadline?.cancel()
            deadline = nil
            connections.markBusy(context.channel)
            let request = Self.request(from: head, body: body)
            let handler = self.handler
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            Task {
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
        deadline?.cancel()
        deadline = closing(context.channel, after: limits.writeTimeout)
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
