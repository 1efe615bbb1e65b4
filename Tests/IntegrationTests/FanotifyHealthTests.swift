import Daemon
import FerrySystem
import Foundation
import KernelBackends
import Logging
import Testing

/// `GET /health` asks the fanotify backend whether its loop turns. Concurrent checks once read
/// the clock before another check stored a later time, and the unsigned difference trapped: the
/// hostile-client test killed ferryd that way. Eight threads hammer the check here.
@Suite struct FanotifyHealthTests {
    @Test func concurrentHealthChecksNeverTrap() throws {
        guard integrationPrerequisitesMet(tools: []) else { return }
        let group: FanotifyGroup
        do { group = try FanotifyGroup.preContent() } catch {
            if Build.integrationRequired { Issue.record("no pre-content fanotify group: \(error)") } else { print("SKIPPED: \(error)") }
            return
        }
        let directory = NSTemporaryDirectory() + "ferry-health-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backend = try FanotifyBackend(group: group, cacheDirectory: directory, store: nil, gate: FetchGate(limit: 1),
                                          logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let threads = (0..<8).map { _ in
            Thread { for _ in 0..<50_000 { _ = backend.healthProblem() } }
        }
        for thread in threads { thread.start() }
        while threads.contains(where: \.isExecuting) { usleep(10_000) }
        // The loop never ran: once 4 ticks have passed, it is reported as stuck (not a crash).
        usleep(UInt32(5 * FanotifyBackend.loopTickMilliseconds) * 1000)
        #expect(backend.healthProblem()?.contains("stuck") == true)
    }
}
