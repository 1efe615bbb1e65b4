import FerrySystem
import Foundation
import Testing
@testable import Daemon

/// The HTTP server loop answers real clients (curl) over TCP and over a Unix socket.
@Suite struct ControlHTTPTests {
    /// Runs curl on a thread of its own: the server answers through Swift concurrency, whose
    /// few threads a blocking wait in the test must not occupy.
    static func curl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try curlBlocking(arguments) }) }
        }
    }

    static func curlBlocking(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try runCapturingOutput("/usr/bin/curl", ["-sS"] + arguments)
    }

    /// Runs `executable` and returns its exit status and standard output.
    static func runCapturingOutput(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func servesOverTCPOnAnEphemeralPort() async throws {
        let (listener, port) = try TCPSocket.listen(host: "127.0.0.1", port: 0)
        #expect(port != 0)
        let server = try await ControlHTTP.serve(listener: listener, limits: .networkPort) { request in
            .json(["path": request.path, "x": request.query["x"] ?? "-", "method": request.method])
        }
        defer { server.close() }
        let (status, output) = try await Self.curl(["-X", "POST", "http://127.0.0.1:\(port)/hello?x=42"])
        #expect(status == 0)
        #expect(output == #"{"method":"POST","path":"/hello","x":"42"}"# + "\n")
    }

    @Test func rejectsANonNumericAddress() {
        #expect(throws: SystemError.self) { try TCPSocket.listen(host: "localhost.invalid", port: 0) }
    }

    @Test func servesOverAUnixSocket() async throws {
        let path = NSTemporaryDirectory() + "ferry-http-\(getpid()).sock"
        let listener = try UnixSocket.listen(at: path)
        defer { unlink(path) }
        let server = try await ControlHTTP.serve(listener: listener, limits: .controlSocket) { _ in
            ControlResponse(status: 404, contentType: "text/plain", body: Array("nope".utf8))
        }
        defer { server.close() }
        let (status, output) = try await Self.curl(["--unix-socket", path, "-w", " %{http_code}", "http://ferry/x"])
        #expect(status == 0)
        #expect(output == "nope 404")
    }

    /// Both kinds of listener keep the full listen backlog once NIO has taken them over. NIO
    /// listens again on a socket it is handed, with 128, which left ferryd's control socket a
    /// queue of 128: under the hostile-client test a `GET /health` was refused at connect
    /// ("Couldn't connect to server"). `ss` reads the queue's depth from the kernel (Send-Q of a
    /// listening socket).
    @Test func listenersKeepTheirFullBacklog() async throws {
        let somaxconn = Int32((try? String(contentsOfFile: "/proc/sys/net/core/somaxconn", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 4096
        let expected = min(UnixSocket.defaultBacklog, somaxconn)
        let path = NSTemporaryDirectory() + "ferry-backlog-\(getpid()).sock"
        let unixListener = try UnixSocket.listen(at: path)
        defer { unlink(path) }
        let unixServer = try await ControlHTTP.serve(listener: unixListener, limits: .controlSocket) { _ in .json(["ok": true]) }
        defer { unixServer.close() }
        let (tcpListener, port) = try TCPSocket.listen(host: "127.0.0.1", port: 0)
        let tcpServer = try await ControlHTTP.serve(listener: tcpListener, limits: .networkPort) { _ in .json(["ok": true]) }
        defer { tcpServer.close() }

        let unixDepth = try Self.listenQueueDepth(["-xlnH", "src", path])
        let tcpDepth = try Self.listenQueueDepth(["-ltnH", "sport", "=", ":\(port)"])
        #expect(unixDepth == expected, "the Unix socket's listen queue holds \(unixDepth.map(String.init) ?? "?") (want \(expected))")
        #expect(tcpDepth == expected, "the TCP port's listen queue holds \(tcpDepth.map(String.init) ?? "?") (want \(expected))")
    }

    /// The Send-Q column of the one listening socket `ss arguments` lists: its backlog.
    static func listenQueueDepth(_ arguments: [String]) throws -> Int32? {
        let lines = try runCapturingOutput("/usr/bin/env", ["ss"] + arguments).output.split(separator: "\n")
        guard lines.count == 1 else { return nil }
        // Unix: Netid State Recv-Q Send-Q ...; TCP (-t): State Recv-Q Send-Q ...
        let fields = lines[0].split(separator: " ", omittingEmptySubsequences: true)
        let column = arguments[0].contains("x") ? 3 : 2
        return fields.count > column ? Int32(fields[column]) : nil
    }

    /// Query strings of any shape parse: `?=`, `?&&`, `?a=` and `?=b` once crashed the parser
    /// (an index out of range on an empty pair), which killed ferryd from one request.
    @Test(arguments: ["/x?=", "/x?&&=&", "/x?a=", "/x?=b", "/x?a=1&=&b", "/x?%zz=%"])
    func oddQueryStringsParse(target: String) throws {
        let (path, _) = ControlHTTP.splitTarget(target)
        #expect(path == "/x")
    }
}
