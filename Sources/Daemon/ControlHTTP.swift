public import FerrySystem
import Foundation

/// One HTTP/1.1 request as the control API sees it (no chunked bodies, no keep-alive).
public struct ControlRequest: Sendable {
    public var method: String
    /// The path without the query.
    public var path: String
    public var query: [String: String]
    public var body: [UInt8]

    public init(method: String, path: String, query: [String: String], body: [UInt8]) {
        self.method = method
        self.path = path
        self.query = query
        self.body = body
    }
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

/// The control API's HTTP: the client side `ferry` uses (one request per connection,
/// `Content-Length` bodies, at most 16 MiB of response), and the server side on SwiftNIO
/// (`HTTPListener`).
public enum ControlHTTP {
    static let maximumBody = 16 << 20

    public struct MalformedMessage: Error, CustomStringConvertible {
        public var reason: String
        public var description: String { "malformed HTTP message: \(reason)" }
    }

    /// Splits a request target into its path and its percent-decoded query parameters. Pairs of
    /// any shape are kept (`=` alone, `=v`, `k=`): an empty side is an empty string.
    public static func splitTarget(_ target: String) -> (path: String, query: [String: String]) {
        guard let q = target.firstIndex(of: "?") else { return (target, [:]) }
        var query: [String: String] = [:]
        for pair in target[target.index(after: q)...].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                .map { String($0).removingPercentEncoding ?? String($0) }
            query[kv[0]] = kv.count > 1 ? kv[1] : ""
        }
        return (String(target[..<q]), query)
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
    /// Serves `listener` (a bound, listening Unix or TCP socket) on SwiftNIO with `limits`,
    /// answering each request with `handler`, until the returned listener is closed.
    @discardableResult
    public static func serve(listener: FerrySystem.FileDescriptor, limits: HTTPServerLimits,
                             admit: (@Sendable (_ remoteIP: String?) -> Bool)? = nil,
                             handler: @escaping @Sendable (ControlRequest) async -> ControlResponse) async throws -> HTTPListener {
        try await HTTPListener.serve(listener: listener, limits: limits, admit: admit, handler: handler)
    }
}
