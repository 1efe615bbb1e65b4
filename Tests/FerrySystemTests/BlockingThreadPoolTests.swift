import Foundation
import Synchronization
import Testing
import FerrySystem

/// The pool for blocking calls grows past the core count, so blocked work never takes the
/// threads async tasks run on, and the serial queue runs its pieces one at a time.
@Suite struct BlockingThreadPoolTests {
    /// Sixteen jobs that each block until all sixteen are running: only a pool that gives every
    /// job a thread of its own gets them all there (a pool the size of the cores, as libdispatch's
    /// root queues are on a two-core machine, would leave them waiting until the timeout). Async
    /// tasks still run meanwhile.
    @Test func blockedJobsEachGetAThreadAndTasksStillRun() async throws {
        let pool = BlockingThreadPool(maximumThreads: 64)
        let arrived = SharedCount()
        let count = 16
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<count {
                group.addTask {
                    try await pool.run {
                        arrived.add()
                        let deadline = Date().addingTimeInterval(20)
                        while arrived.value < count && Date() < deadline { usleep(1_000) }
                        return arrived.value == count
                    }
                }
            }
            // While every job blocks, an unrelated task completes.
            let unrelated = await Task.detached { 42 }.value
            #expect(unrelated == 42)
            var all: [Bool] = []
            for try await r in group { all.append(r) }
            return all
        }
        #expect(results.count == count && results.allSatisfy { $0 }, "all \(count) jobs were running at once")
    }

    @Test func errorsComeBackToTheCaller() async {
        struct Boom: Error {}
        do {
            try await BlockingThreadPool.shared.run { throw Boom() }
            Issue.record("no error")
        } catch {
            #expect(error is Boom)
        }
    }

    /// Fifty pieces queued from concurrent tasks all run, never two at once.
    @Test func serialQueueRunsPiecesOneAtATime() async throws {
        let queue = SerialBlockingQueue()
        let running = SharedCount(), overlaps = SharedCount()
        let order = SharedList()
        var tasks: [Task<Void, any Error>] = []
        for i in 0..<50 {
            tasks.append(Task {
                try await queue.run {
                    if running.add() > 1 { overlaps.add() }
                    usleep(200)
                    order.append(i)
                    running.add(-1)
                }
            })
        }
        for task in tasks { try await task.value }
        #expect(overlaps.value == 0)
        #expect(Set(order.items) == Set(0..<50) && order.count == 50)
    }
}

/// A counter shared by closures that run on other threads.
final class SharedCount: Sendable {
    private let count = Atomic<Int>(0)
    @discardableResult
    func add(_ n: Int = 1) -> Int { count.add(n, ordering: .relaxed).newValue }
    var value: Int { count.load(ordering: .relaxed) }
}

final class SharedList: Sendable {
    private let list = Mutex<[Int]>([])
    func append(_ i: Int) { list.withLock { $0.append(i) } }
    var count: Int { list.withLock { $0.count } }
    var items: [Int] { list.withLock { $0 } }
}
