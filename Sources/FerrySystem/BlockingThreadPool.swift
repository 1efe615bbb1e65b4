import Foundation
import Synchronization

/// Threads for blocking work — libcurl transfers, mount(2), umount2(2), fsync, file walks — that
/// are nobody else's: not Swift's cooperative pool, and not libdispatch's global queues either.
///
/// On Linux Swift's default executor runs tasks on libdispatch's global root queues, and a
/// custom concurrent `DispatchQueue` drains on those same root queues, whose worker count
/// follows the core count. Work that blocks there (a download held up by a slow registry, a
/// mount(2) waiting for ferryd's own fills) takes threads the async tasks need: on two cores a
/// few slow downloads stall every kernel fill and control request. This pool starts a thread
/// whenever none is idle (up to `maximumThreads`), and lets idle threads go after a while.
public final class BlockingThreadPool: Sendable {
    /// The process's pool for blocking calls.
    public static let shared = BlockingThreadPool(maximumThreads: 512)

    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var head = 0
        var threads = 0
        var idle = 0
    }
    private let state = Mutex(State())
    private let wakeUp = NSCondition()
    private let maximumThreads: Int
    private let idleSeconds: Double

    /// - Parameters:
    ///   - maximumThreads: threads at most; jobs beyond wait for a free one.
    ///   - idleSeconds: how long a thread waits for work before it ends.
    public init(maximumThreads: Int, idleSeconds: Double = 30) {
        self.maximumThreads = max(1, maximumThreads)
        self.idleSeconds = idleSeconds
    }

    /// Runs `body` on a pool thread and returns its result to the suspended caller.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            submit { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Queues `job`; starts a thread when none is idle to take it.
    public func submit(_ job: @escaping @Sendable () -> Void) {
        let startThread = state.withLock { s -> Bool in
            s.jobs.append(job)
            let waiting = s.jobs.count - s.head
            if waiting > s.idle && s.threads < maximumThreads {
                s.threads += 1
                return true
            }
            return false
        }
        if startThread {
            let thread = Thread { [self] in work() }
            thread.name = "ferry-blocking"
            thread.start()
        } else {
            wakeUp.lock()
            wakeUp.signal()
            wakeUp.unlock()
        }
    }

    private func nextJob() -> (@Sendable () -> Void)? {
        state.withLock { s in
            guard s.head < s.jobs.count else { return nil }
            let job = s.jobs[s.head]
            s.head += 1
            if s.head > 64 && s.head * 2 > s.jobs.count {
                s.jobs.removeFirst(s.head)
                s.head = 0
            }
            return job
        }
    }

    private func work() {
        while true {
            if let job = nextJob() {
                job()
                continue
            }
            // Nothing queued: wait (idle) for a signal or the idle time, then look again.
            wakeUp.lock()
            state.withLock { $0.idle += 1 }
            let queued = state.withLock { $0.head < $0.jobs.count }
            let signalled = queued || wakeUp.wait(until: Date(timeIntervalSinceNow: idleSeconds))
            wakeUp.unlock()
            let retire = state.withLock { s -> Bool in
                s.idle -= 1
                if !signalled && s.head >= s.jobs.count {
                    s.threads -= 1
                    return true
                }
                return false
            }
            if retire { return }
        }
    }
}

/// Blocking work — syscalls that may wait for the kernel or for ferryd's own kernel backend
/// (mount(2), umount2(2), fsync, directory walks) — run where it cannot hold up Swift's
/// cooperative threads: on `BlockingThreadPool.shared`.
public enum DedicatedThread {
    /// Runs `body` on a pool thread and returns its result to the suspended caller.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await BlockingThreadPool.shared.run(body)
    }
}

/// Blocking work that must happen one piece at a time (mount syscalls whose new kernel object is
/// found by looking before and after; rewrites of one state file), on the blocking pool.
/// Callers suspend while they wait their turn; no cooperative thread ever waits on a lock.
public final class SerialBlockingQueue: Sendable {
    private struct State {
        var pending: [@Sendable () -> Void] = []
        var draining = false
    }
    private let state = Mutex(State())
    private let pool: BlockingThreadPool

    public init(pool: BlockingThreadPool = .shared) {
        self.pool = pool
    }

    /// Runs `body` after every piece enqueued before it, and returns its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let startDrain = state.withLock { s -> Bool in
                s.pending.append { continuation.resume(with: Result { try body() }) }
                if s.draining { return false }
                s.draining = true
                return true
            }
            if startDrain { pool.submit { [self] in drain() } }
        }
    }

    /// Runs queued pieces in order until none is left.
    private func drain() {
        while true {
            let next = state.withLock { s -> (@Sendable () -> Void)? in
                if s.pending.isEmpty {
                    s.draining = false
                    return nil
                }
                return s.pending.removeFirst()
            }
            guard let next else { return }
            next()
        }
    }
}
