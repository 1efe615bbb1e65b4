import Foundation
internal import Prometheus
import Synchronization

/// Daemon-wide request figures for Prometheus: kernel requests by result, how long each took to
/// answer (a histogram), and how many are being filled right now. Backends record into it as
/// requests are answered; the series live in `registry` (swift-prometheus), which also holds the
/// series read at scrape time (`ScrapedSeries`) and writes the exposition.
public final class DaemonMetrics: Sendable {
    /// Upper bounds (seconds) of the answer-latency histogram buckets; `+Inf` is implied.
    public static let latencyBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    /// Every series of this daemon; `GET /metrics` is its text exposition.
    let registry: PrometheusCollectorRegistry
    /// The `backend` label of the request series ("fanotify", "fscache").
    public let backend: String
    private let fillDuration: ValueHistogram
    private let inFlight: Prometheus.Gauge
    /// One counter per result, made on first use (the registry looks series up under a lock).
    private let requestCounters = Mutex<[String: Prometheus.Counter]>([:])

    /// - Parameter backend: the `backend` label of the request series.
    public convenience init(backend: String) { self.init(backend: backend, registry: PrometheusCollectorRegistry()) }

    init(backend: String, registry: PrometheusCollectorRegistry) {
        self.registry = registry
        self.backend = backend
        fillDuration = registry.makeValueHistogram(name: "ferry_fill_duration_seconds", labels: [("backend", backend)],
                                                   buckets: Self.latencyBuckets, help: "Time from a kernel request to its answer.")
        inFlight = registry.makeGauge(name: "ferry_fills_in_flight", labels: [("backend", backend)],
                                      help: "Kernel requests being filled now.")
    }

    /// A kernel request is being filled.
    public func requestStarted() { inFlight.increment() }

    /// A request started with `requestStarted()` was answered: `result` is "ok" or "error".
    public func requestFinished(result: String, seconds: Double) {
        inFlight.decrement()
        requestAnswered(result: result)
        fillDuration.record(seconds)
    }

    /// A request answered without a fill ("unknown_file", "own_write", "recovered").
    public func requestAnswered(result: String) {
        let counter = requestCounters.withLock { counters in
            if let counter = counters[result] { return counter }
            let counter = registry.makeCounter(name: "ferry_requests_total", labels: [("backend", backend), ("result", result)],
                                               help: "Kernel read requests answered, by backend and result.")
            counters[result] = counter
            return counter
        }
        counter.increment()
    }
}

/// Values read from the daemon's own counters when Prometheus scrapes (per image, per peer,
/// cache usage, the blob proxy), written with `MetricsWriter` into the registry beside the
/// series recorded as things happen. A series a scrape no longer names (an unregistered image,
/// a peer dropped from the list) is removed from the registry.
final class ScrapedSeries: Sendable {
    private enum Series { case counter(Prometheus.Counter), gauge(Prometheus.Gauge) }
    private let registry: PrometheusCollectorRegistry
    /// The series the last scrape set, by name and labels; also serialises scrapes, so a
    /// counter is never seen between its reset and its new value.
    private let live = Mutex<[String: Series]>([:])

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    /// Sets every series `write` names, removes the ones the last scrape named and this one did
    /// not, and returns the registry's whole text exposition.
    func scrape(_ write: (inout MetricsWriter) -> Void) -> String {
        var writer = MetricsWriter()
        write(&writer)
        return live.withLock { live in
            var now: [String: Series] = [:]
            for sample in writer.samples {
                let key = sample.name + "\u{0}" + sample.labels.map { $0.0 + "=" + $0.1 }.joined(separator: "\u{0}")
                switch sample.value {
                case .counter(let value):
                    let counter: Prometheus.Counter
                    if case .counter(let existing) = live[key] { counter = existing } else {
                        counter = registry.makeCounter(name: sample.name, labels: sample.labels, help: sample.help)
                    }
                    counter.reset()
                    counter.increment(by: Int64(clamping: value))
                    now[key] = .counter(counter)
                case .gauge(let value):
                    let gauge: Prometheus.Gauge
                    if case .gauge(let existing) = live[key] { gauge = existing } else {
                        gauge = registry.makeGauge(name: sample.name, labels: sample.labels, help: sample.help)
                    }
                    gauge.set(to: value)
                    now[key] = .gauge(gauge)
                }
            }
            for (key, series) in live where now[key] == nil {
                switch series {
                case .counter(let counter): registry.unregisterCounter(counter)
                case .gauge(let gauge): registry.unregisterGauge(gauge)
                }
            }
            live = now
            return registry.emitToString()
        }
    }
}

/// The values of one scrape: counters (monotonic totals kept elsewhere) and gauges. Each metric
/// name must always come with the same help text and always with labels or always without.
public struct MetricsWriter: Sendable {
    enum Value: Sendable { case counter(UInt64), gauge(Double) }
    struct Sample: Sendable {
        var name: String
        var help: String
        var labels: [(String, String)]
        var value: Value
    }
    private(set) var samples: [Sample] = []

    /// A total kept by the daemon (never decreasing while the labelled thing exists).
    public mutating func counter(_ name: String, _ help: String, labels: [(String, String)] = [], _ value: some BinaryInteger) {
        samples.append(Sample(name: name, help: help, labels: labels, value: .counter(UInt64(clamping: value))))
    }

    /// A value that goes up and down.
    public mutating func gauge(_ name: String, _ help: String, labels: [(String, String)] = [], _ value: Double) {
        samples.append(Sample(name: name, help: help, labels: labels, value: .gauge(value)))
    }
}

extension FerryDaemon {
    /// The service-level series of a scrape: cache size, limit and hit ratio.
    func writeServiceMetrics(_ images: [ImageSummary], into out: inout MetricsWriter) {
        let hits = images.reduce(0) { $0 + $1.cacheHits + $1.storeHits }
        let fetched = images.reduce(0) { $0 + $1.chunksVerified }
        out.gauge("ferry_cache_hit_ratio", "Chunks served from the cache files or the store, of all chunks requests needed.",
                  hits + fetched == 0 ? 0 : Double(hits) / Double(hits + fetched))
        guard let cache else { return }
        let usage = cache.usage()
        let help = "Bytes the local caches use on disk, by kind."
        out.gauge("ferry_cache_bytes", help, labels: [("kind", "store")], Double(usage.storeBytes))
        out.gauge("ferry_cache_bytes", help, labels: [("kind", "blob_cache")], Double(usage.blobCacheBytes))
        if let limit = cache.limit { out.gauge("ferry_cache_limit_bytes", "cache_limit.", Double(limit)) }
        out.gauge("ferry_store_writes_suspended", "1 while the chunk store skips saves because the disk is full.",
                  cache.storeWritesSuspended ? 1 : 0)
    }
}
