import Foundation
import Synchronization

/// Daemon-wide request figures for Prometheus: kernel requests by result, how long each took to
/// answer (a histogram), and how many are being filled right now. Backends record into it.
public final class DaemonMetrics: Sendable {
    /// Upper bounds (seconds) of the answer-latency histogram buckets; `+Inf` is implied.
    public static let latencyBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    private struct State {
        var requests: [String: Int] = [:]
        var bucketCounts = [Int](repeating: 0, count: DaemonMetrics.latencyBuckets.count)
        var latencyCount = 0
        var latencySum = 0.0
    }
    private let state = Mutex(State())
    private let inFlight = Atomic<Int>(0)

    public init() {}

    /// A kernel request is being filled.
    public func requestStarted() { inFlight.add(1, ordering: .relaxed) }

    /// A request started with `requestStarted()` was answered: `result` is "ok" or "error".
    public func requestFinished(result: String, seconds: Double) {
        inFlight.subtract(1, ordering: .relaxed)
        record(result: result, seconds: seconds)
    }

    /// A request answered without a fill ("unknown_file", "own_write").
    public func requestAnswered(result: String) {
        state.withLock { $0.requests[result, default: 0] += 1 }
    }

    private func record(result: String, seconds: Double) {
        state.withLock { s in
            s.requests[result, default: 0] += 1
            s.latencyCount += 1
            s.latencySum += seconds
            if let bucket = Self.latencyBuckets.firstIndex(where: { seconds <= $0 }) { s.bucketCounts[bucket] += 1 }
        }
    }

    /// Requests being filled now.
    public var fillsInFlight: Int { inFlight.load(ordering: .relaxed) }

    /// Requests answered, by result.
    public var requestsByResult: [String: Int] { state.withLock { $0.requests } }

    /// Prometheus text for these figures; `backend` labels the request series.
    func text(backend: String) -> String {
        let s = state.withLock { $0 }
        var out = "# HELP ferry_requests_total Kernel read requests answered, by backend and result.\n# TYPE ferry_requests_total counter\n"
        for (result, count) in s.requests.sorted(by: { $0.key < $1.key }) {
            out += "ferry_requests_total{backend=\"\(backend)\",result=\"\(result)\"} \(count)\n"
        }
        out += "# HELP ferry_fill_duration_seconds Time from a kernel request to its answer.\n# TYPE ferry_fill_duration_seconds histogram\n"
        var cumulative = 0
        for (bound, count) in zip(Self.latencyBuckets, s.bucketCounts) {
            cumulative += count
            out += "ferry_fill_duration_seconds_bucket{backend=\"\(backend)\",le=\"\(bound)\"} \(cumulative)\n"
        }
        out += "ferry_fill_duration_seconds_bucket{backend=\"\(backend)\",le=\"+Inf\"} \(s.latencyCount)\n"
        out += "ferry_fill_duration_seconds_sum{backend=\"\(backend)\"} \(String(format: "%.6f", s.latencySum))\n"
        out += "ferry_fill_duration_seconds_count{backend=\"\(backend)\"} \(s.latencyCount)\n"
        out += "# HELP ferry_fills_in_flight Kernel requests being filled now.\n# TYPE ferry_fills_in_flight gauge\n"
        out += "ferry_fills_in_flight{backend=\"\(backend)\"} \(fillsInFlight)\n"
        return out
    }
}

extension FerryDaemon {
    /// The service-level series appended to `metricsText()`: requests, fill latency, fills in
    /// flight, cache size, limit and hit ratio.
    func serviceMetricsText() -> String {
        var out = metrics.text(backend: backend.name)
        let images = imageSummaries()
        let hits = images.reduce(0) { $0 + $1.cacheHits + $1.storeHits }
        let fetched = images.reduce(0) { $0 + $1.chunksVerified }
        out += "# HELP ferry_cache_hit_ratio Chunks served from the cache files or the store, of all chunks requests needed.\n"
        out += "# TYPE ferry_cache_hit_ratio gauge\n"
        out += "ferry_cache_hit_ratio \(hits + fetched == 0 ? "0" : String(format: "%.4f", Double(hits) / Double(hits + fetched)))\n"
        if let cache {
            let usage = cache.usage()
            out += "# HELP ferry_cache_bytes Bytes the local caches use on disk, by kind.\n# TYPE ferry_cache_bytes gauge\n"
            out += "ferry_cache_bytes{kind=\"store\"} \(usage.storeBytes)\nferry_cache_bytes{kind=\"blob_cache\"} \(usage.blobCacheBytes)\n"
            if let limit = cache.limit {
                out += "# HELP ferry_cache_limit_bytes cache_limit.\n# TYPE ferry_cache_limit_bytes gauge\nferry_cache_limit_bytes \(limit)\n"
            }
            out += "# HELP ferry_store_writes_suspended 1 while the chunk store skips saves because the disk is full.\n"
            out += "# TYPE ferry_store_writes_suspended gauge\nferry_store_writes_suspended \(cache.storeWritesSuspended ? 1 : 0)\n"
        }
        return out
    }
}
