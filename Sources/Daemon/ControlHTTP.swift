public import FerrySystem
import Foundation
import Synchronization

/// One HTTP/1.1 request as the control API sees it (no chunked bodies, no keep-alive).
public struct ControlRequest: Sendable {
    public var method: String
    /// The path without the query.
    public var path: String
    public var query: [String: String]
    public var body: [UInt8]
}

/// One HTTP response of the control API.
public struct ControlResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]

    public init(status: Int, contentType: String = "application/json", body: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    /// A JSON response from an `Encodable` value.
    public static func json(_ value: some Encodable, status: Int = 200) -> ControlResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = (try? encoder.encode(value)).map(Array.init) ?? Array(#"{"error":"encoding failed"}"#.utf8)
        return ControlResponse(status: status, body: body + [0x0a])
    }

    /// `{"error": message}` with `status`.
    public static func error(_ message: String, status: Int) -> ControlResponse {
        json(["error": message], status: status)
    }
}

/// Minimal HTTP/1.1 framing over a stream socket, for the control API on a Unix socket.
/// Both ends are Ferry's own (`ferryd` and `ferry`, or `curl --unix-socket`), so the subset is
/// small: one request per connection, `Content-Length` bodies, at most 16 MiB.
public enum ControlHTTP {
    static let maximumBody = 16 << 20

    public struct MalformedMessage: Error, CustomStringConvertible {
        public var reason: String
        public var description: String { "malformed HTTP message: \(reason)" }
    }

    /// Reads one request from `socket`.
    public static func readRequest(from socket: FileDescriptor) throws -> ControlRequest {
        let (head, body) = try readMessage(from: socket)
        guard let requestLine = head.first else { throw MalformedMessage(reason: "empty request") }
        let parts = requestLine.split(separator: " ")
        guard parts.count == 3 else { throw MalformedMessage(reason: "bad request line") }
        let target = String(parts[1])
        var path = target, query: [String: String] = [:]
        if let q = target.firstIndex(of: "?") {
            path = String(target[..<q])
            for pair in target[target.index(after: q)...].split(separator: "&") {
                // "=" alone, "=v" and "k=" are pairs too: keep empty sides instead of dropping them.
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    .map { String($0).removingPercentEncoding ?? String($0) }
                query[kv[0]] = kv.count > 1 ? kv[1] : ""
            }
        }
        return ControlRequest(method: String(parts[0]), path: path, query: query, body: body)
    }

    /// Writes `response` to `socket`.
    public static func write(_ response: ControlResponse, to socket: FileDescriptor) throws {
        let reason = [200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 409: "Conflict",
                      500: "Internal Server Error", 503: "Service Unavailable"][response.status] ?? "Status"
        let head = "HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\n"
            + "Content-Length: \(response.body.count)\r\nConnection: close\r\n\r\n"
        try socket.write(Array(head.utf8) + response.body)
    }

    /// Sends one request over a new connection to the socket at `path` and returns the response.
    public static func send(method: String, path target: String, body: [UInt8] = [], socketPath: String) throws -> ControlResponse {
        let socket = try UnixSocket.connect(to: socketPath)
        defer { try? socket.close() }
        let head = "\(method) \(target) HTTP/1.1\r\nHost: ferryd\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        try socket.write(Array(head.utf8) + body)
        let (lines, responseBody) = try readMessage(from: socket)
        guard let status = lines.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw MalformedMessage(reason: "bad status line")
        }
        var contentType = "application/octet-stream"
        for line in lines.dropFirst() where line.lowercased().hasPrefix("content-type:") {
            contentType = line.dropFirst("content-type:".count).trimmingCharacters(in: .whitespaces)
        }
        return ControlResponse(status: status, contentType: contentType, body: responseBody)
    }

    /// Reads header lines and a Content-Length body.
    private static func readMessage(from socket: FileDescriptor) throws -> ([String], [UInt8]) {
        var buffer: [UInt8] = []
        let separator: [UInt8] = [13, 10, 13, 10]
        var headEnd: Int?
        while headEnd == nil {
            let piece = try socket.read(upTo: 4096, partial: true)
            if piece.isEmpty { throw MalformedMessage(reason: "connection closed before the end of the headers") }
            buffer += piece
            if buffer.count > 64 * 1024 { throw MalformedMessage(reason: "headers too large") }
            headEnd = buffer.firstRange(of: separator)?.lowerBound
        }
        guard let end = headEnd else { throw MalformedMessage(reason: "no header end") }
        let lines = String(decoding: buffer[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        var length = 0
        for line in lines.dropFirst() where line.lowercased().hasPrefix("content-length:") {
            length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? -1
        }
        guard length >= 0, length <= maximumBody else { throw MalformedMessage(reason: "bad Content-Length") }
        var body = Array(buffer[(end + 4)...])
        while body.count < length {
            let piece = try socket.read(upTo: length - body.count, partial: true)
            if piece.isEmpty { throw MalformedMessage(reason: "body ends early") }
            body += piece
        }
        return (lines, Array(body.prefix(length)))
    }
}

extension ControlHTTP {
    /// Accepts connections on `listener` (a Unix or TCP stream socket) on a thread of its own and
    /// answers each on its own thread with `handler`, until the listener is shut down.
    public static func serve(listener: FileDescriptor,
                             handler: @escaping @Sendable (ControlRequest) async -> ControlResponse) {
        Thread.detachNewThread {
            while true {
                guard let connection = try? UnixSocket.accept(listener) else { return }
                Thread.detachNewThread {
                    defer { try? connection.close() }
                    let response: ControlResponse
                    do {
                        let request = try readRequest(from: connection)
                        response = answerBlocking(request, handler)
                    } catch {
                        response = .error("\(error)", status: 400)
                    }
                    try? write(response, to: connection)
                }
            }
        }
    }

    /// Runs the async handler from a plain thread and waits for its answer.
    private static func answerBlocking(_ request: ControlRequest,
                                       _ handler: @escaping @Sendable (ControlRequest) async -> ControlResponse) -> ControlResponse {
        let box = Mutex<ControlResponse?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let response = await handler(request)
            box.withLock { $0 = response }
            done.signal()
        }
        done.wait()
        return box.withLock { $0 } ?? .error("no response", status: 500)
    }
}
