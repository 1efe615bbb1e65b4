import Foundation
import Synchronization
import Testing
@testable import Daemon

/// Concurrent requests for one key share one run; other keys run beside it.
@Suite struct SingleFlightTests {
    @Test func concurrentCallersOfOneKeyShareOneRun() async throws {
        let flight = SingleFlight<String, Int>()
        let runs = Tally()
        let values = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    try await flight.value(for: "image") {
                        runs.add()
                        try await Task.sleep(for: .milliseconds(300))
                        return 7
                    }
                }
            }
            var all: [Int] = []
            for try await v in group { all.append(v) }
            return all
        }
        #expect(values == Array(repeating: 7, count: 20))
        #expect(runs.value == 1)
        #expect(flight.keysInFlight.isEmpty)
    }

    /// Two keys' operations each wait until both have started: they only finish if they overlap.
    @Test func differentKeysRunSideBySide() async throws {
        let flight = SingleFlight<String, Bool>()
        let started = Tally()
        let overlapped = try await withThrowingTaskGroup(of: Bool.self) { group in
            for key in ["a", "b"] {
                group.addTask {
                    try await flight.value(for: key) {
                        started.add()
                        for _ in 0..<500 where started.value < 2 { try await Task.sleep(for: .milliseconds(10)) }
                        return started.value == 2
                    }
                }
            }
            var all: [Bool] = []
            for try await v in group { all.append(v) }
            return all
        }
        #expect(overlapped == [true, true])
    }

    /// A failure reaches every waiter, and the next call runs again.
    @Test func aFailureIsSharedAndNotRemembered() async throws {
        struct Failed: Error {}
        let flight = SingleFlight<Int, Int>()
        let runs = Tally()
        do {
            _ = try await flight.value(for: 1) { runs.add(); throw Failed() }
            Issue.record("no error")
        } catch {
            #expect(error is Failed)
        }
        let value = try await flight.value(for: 1) { runs.add(); return 3 }
        #expect(value == 3 && runs.value == 2)
    }
}

/// A counter the operations share.
final class Tally: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
