import Foundation
import Synchronization

/// A forward HTTP proxy that blob range reads go through: Dragonfly's dfdaemon (its proxy port,
/// 4001 by default), which turns them into P2P downloads, or any HTTP proxy. Manifests, token
/// requests and pushes never go through it. When the proxy is down or answers with its own
/// errors (transport failures, 5xx), reads go to the mirrors and the origin directly, and the
/// proxy is avoided for a backoff period before it is tried (or health-checked) again.
public struct BlobProxyOptions: Sendable, Hashable {
    /// The proxy, e.g. "http://127.0.0.1:4001".
    public var url: String
    /// Header lines added to proxied blob requests, e.g. "X-Dragonfly-Tag: ferry".
    public var headers: [String]
    /// A URL (fetched directly, not through the proxy) that answers 2xx while the proxy is
    /// healthy; nil makes the next proxied read itself the probe once the backoff has passed.
    public var healthURL: String?
    /// The first backoff after a failure; it doubles on each further failure up to `maxBackoff`.
    public var backoff: Duration
    public var maxBackoff: Duration

    /// Headers dfdaemon understands: `X-Dragonfly-Tag` keeps Ferry's tasks in their own P2P
    /// overlay; `X-Dragonfly-Filter` names the query parameters of pre-signed storage URLs
    /// (which change per request) that dfdaemon must drop when it derives the task id, so every
    /// node's read of the same blob lands in the same task.
    public static let dragonflyHeaders = [
        "X-Dragonfly-Tag: ferry",
        "X-Dragonfly-Filter: X-Amz-Algorithm&X-Amz-Credential&X-Amz-Date&X-Amz-Expires&X-Amz-SignedHeaders&X-Amz-Signature&X-Amz-Security-Token&Expires&Signature&sig&se&sp&sv",
        "X-Dragonfly-Use-P2P: true",
    ]

    public init(url: String, headers: [String] = BlobProxyOptions.dragonflyHeaders, healthURL: String? = nil,
                backoff: Duration = .seconds(2), maxBackoff: Duration = .seconds(60)) {
        self.url = url
        self.headers = headers
        self.healthURL = healthURL
        self.backoff = backoff
        self.maxBackoff = maxBackoff
    }
}

/// What the proxy route did, for metrics.
public struct BlobProxyStatistics: Sendable {
    /// Range reads answered through the proxy.
    public var proxiedReads: Int
    /// Range reads that went direct because the proxy failed (or was avoided while down).
    public var directFallbacks: Int
    /// Failures of the proxy itself (transport errors, 5xx).
    public var proxyFailures: Int
    /// Whether the proxy is currently considered healthy.
    public var healthy: Bool
}

/// The proxy's health: failures put it in backoff; a health check (or the next read) after the
/// backoff decides whether it is used again.
final class BlobProxyRoute: Sendable {
    let options: BlobProxyOptions
    private struct State {
        var consecutiveFailures = 0
        var avoidUntil: ContinuousClock.Instant?
        var proxied = 0
        var fallbacks = 0
        var failures = 0
    }
    private let state = Mutex(State())

    init(options: BlobProxyOptions) { self.options = options }

    /// Whether the next read should go through the proxy. `probe` runs the health check (a GET
    /// of `healthURL` without the proxy) and returns whether it answered 2xx.
    func shouldUse(probe: (String) -> Bool) -> Bool {
        let now = ContinuousClock.now
        let waiting = state.withLock { s -> Bool? in
            guard let until = s.avoidUntil else { return nil }
            return now < until
        }
        switch waiting {
        case nil: return true
        case true?:
            state.withLock { $0.fallbacks += 1 }
            return false
        case false?:
            guard let health = options.healthURL else { return true }
            if probe(health) {
                state.withLock { $0.avoidUntil = nil; $0.consecutiveFailures = 0 }
                return true
            }
            failed()
            state.withLock { $0.fallbacks += 1 }
            return false
        }
    }

    func succeeded() {
        state.withLock { s in s.proxied += 1; s.consecutiveFailures = 0; s.avoidUntil = nil }
    }

    /// The proxy failed a read: back off (the caller then reads directly).
    func failed() {
        state.withLock { s in
            s.failures += 1
            s.consecutiveFailures += 1
            let factor = 1 << min(s.consecutiveFailures - 1, 16)
            s.avoidUntil = ContinuousClock.now + min(options.maxBackoff, options.backoff * factor)
        }
    }

    /// A read through the proxy failed for a reason that is not the proxy's (e.g. 404): read directly.
    func fellBack() { state.withLock { $0.fallbacks += 1 } }

    var statistics: BlobProxyStatistics {
        state.withLock { s in
            BlobProxyStatistics(proxiedReads: s.proxied, directFallbacks: s.fallbacks, proxyFailures: s.failures,
                                healthy: s.avoidUntil == nil)
        }
    }
}
