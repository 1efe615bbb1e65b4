import Synchronization

/// A counter that many tasks bump at once.
public final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    public func add(_ n: Int) { value.add(n, ordering: .relaxed) }
    public var current: Int { value.load(ordering: .relaxed) }
}

/// What the fill machinery did, per image (exported as metrics and `ferry status`).
public final class FillStatistics: Sendable {
    /// Chunks a request found already present in the cache.
    public let cacheHits = Counter()
    /// Chunks served from the local chunk store.
    public let storeHits = Counter()
    /// Chunks fetched from a source and verified.
    public let chunksVerified = Counter()
    /// Chunks a source returned with wrong bytes.
    public let chunksFailed = Counter()
    /// Bytes the kernel asked for (set by the backend).
    public let bytesRequested = Counter()
    /// Chunks fetched by sequential readahead before any request asked for them.
    public let readaheadChunks = Counter()
    /// Chunks fetched into the store by prefetch after a mount.
    public let prefetchedChunks = Counter()
    /// Uncompressed bytes of the chunks fetched from sources and verified.
    public let uncompressedBytesFetched = Counter()
    private let perSource = Mutex<[String: UInt64]>([:])
    private let badSources = Mutex<[String: Int]>([:])
    private let storeErrors = Mutex<(count: Int, last: String?)>((0, nil))

    public init() {}

    func fetched(from source: String, bytes: UInt64) { perSource.withLock { $0[source, default: 0] += bytes } }
    func badSource(_ source: String) { badSources.withLock { $0[source, default: 0] += 1 } }
    func noteStoreError(_ error: any Error) { storeErrors.withLock { $0 = ($0.count + 1, "\(error)") } }

    /// Compressed bytes fetched, by source name.
    public var bytesBySource: [String: UInt64] { perSource.withLock { $0 } }
    /// Chunks with wrong bytes, by source name.
    public var failuresBySource: [String: Int] { badSources.withLock { $0 } }
    /// Total compressed bytes fetched from all sources.
    public var bytesFetched: UInt64 { perSource.withLock { $0.values.reduce(0, +) } }
    /// Failed writes to the local store (e.g. disk full) and the last reason.
    public var storeFailures: (count: Int, last: String?) { storeErrors.withLock { $0 } }
}

/// Bounds how many fetches run at once across the daemon, so a burst of kernel requests cannot
/// open unbounded connections; waiters are served in arrival order.
public final class FetchGate: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    public init(limit: Int) { state = Mutex(State(available: max(1, limit))) }

    /// Runs `body` holding one of the permits.
    public func withPermit<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        let acquired = state.withLock { s -> Bool in
            if s.available > 0 { s.available -= 1; return true }
            return false
        }
        if acquired { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if s.available > 0 { s.available -= 1; return true }
                s.waiters.append(c)
                return false
            }
            if resumeNow { c.resume() }
        }
    }

    private func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty { s.available += 1; return nil }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}
