import FerrySystem
import Foundation
import NIOCore
import NIOEmbedded
import Testing
@testable import Daemon

/// A full listener makes room for a newcomer only by closing a connection that has had its grace
/// time to send a request and has not; a client that connects and asks at once is never pushed out
/// by a flood of newer connections (`GET /health` failed once in 118 under the hostile-client
/// test when the oldest waiting connection was closed however young it was).
@Suite struct ConnectionAdmissionTests {
    @Test func aYoungConnectionIsNotClosedToMakeRoom() throws {
        let table = ConnectionTable(limit: 2, grace: .milliseconds(500))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let a = EmbeddedChannel(), b = EmbeddedChannel(), c = EmbeddedChannel()
        for channel in [a, b] { try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait() }
        #expect(table.admit(a, now: start))
        #expect(table.admit(b, now: start + .milliseconds(100)))
        // Full, and neither has had its grace time: the newcomer waits, nobody is closed.
        #expect(!table.admit(c, now: start + .milliseconds(200)))
        #expect(a.isActive)
        // a's grace is over: it makes room.
        #expect(table.admit(c, now: start + .milliseconds(600)))
        #expect(!a.isActive)
        #expect(b.isActive)
    }

    @Test func aConnectionBeingAnsweredIsNeverClosedToMakeRoom() throws {
        let table = ConnectionTable(limit: 1, grace: .milliseconds(10))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let a = EmbeddedChannel(), b = EmbeddedChannel()
        try a.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        #expect(table.admit(a, now: start))
        table.markBusy(a)
        #expect(!table.admit(b, now: start + .seconds(60)))
        #expect(a.isActive)
        table.remove(a)
        #expect(table.admit(b, now: start + .seconds(61)))
    }

    /// Deadlines: a connection that has not sent its request within the request timeout is
    /// closed by the sweep; one being answered is not, however long its handler takes; one whose
    /// answer is being written is closed once the write deadline has passed.
    @Test func theSweepClosesOnlyConnectionsPastTheirDeadline() throws {
        let table = ConnectionTable(limit: 8, grace: .milliseconds(500), requestTimeout: .seconds(10))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let idle = EmbeddedChannel(), answering = EmbeddedChannel(), writing = EmbeddedChannel()
        for channel in [idle, answering, writing] {
            try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
            #expect(table.admit(channel, now: start))
        }
        table.markBusy(answering)
        table.markBusy(writing)
        #expect(table.closeExpired(now: start + .seconds(9)) == 0)
        #expect(idle.isActive)
        #expect(table.closeExpired(now: start + .seconds(10)) == 1)
        #expect(!idle.isActive && answering.isActive && writing.isActive)
        table.writing(writing, deadline: start + .seconds(20))
        #expect(table.closeExpired(now: start + .seconds(3600)) == 1)
        #expect(!writing.isActive)
        #expect(answering.isActive, "a handler may take as long as it needs")
    }

    /// A flood of idle connections beyond the limit: they queue (nothing is refused), and a
    /// client behind them is answered once old idle connections have made room. The idle
    /// connections' request timeout is an hour, so only admission can let the client in. The
    /// handler runs on this test process's cooperative pool, which the suite's synchronous
    /// integration tests can hold for minutes on a 2-core machine (the answer once came after
    /// curl's 60 s): curl waits up to 10 minutes; no time is asserted.
    @Test func aClientBehindAFloodOfIdleConnectionsIsAnswered() async throws {
        let path = NSTemporaryDirectory() + "ferry-admission-\(getpid()).sock"
        let listener = try UnixSocket.listen(at: path)
        defer { unlink(path) }
        let limits = HTTPServerLimits(maximumConnections: 8, maximumBodyBytes: 0, requestTimeout: .hours(1), admissionGrace: .milliseconds(200))
        let server = try await ControlHTTP.serve(listener: listener, limits: limits) { _ in .json(["ok": true]) }
        defer { server.close() }
        var idle: [FerrySystem.FileDescriptor] = []
        for _ in 0..<40 { idle.append(try UnixSocket.connect(to: path)) }
        let (status, output) = try await ControlHTTPTests.curl(["--max-time", "600", "--unix-socket", path, "http://ferry/health"])
        #expect(status == 0)
        #expect(output == #"{"ok":true}"# + "\n")
        withExtendedLifetime(idle) {}
    }
}
