public import Daemon
public import Blob
import Foundation
public import Logging
import Synchronization

/// How this node reaches peers: a GET of a URL with a deadline. Implemented over libcurl in
/// the Registry module (ferryd wires it in); tests may use anything.
public protocol PeerTransport: Sendable {
    /// GETs `url` once. Returns the status and body of any answer; throws when there was none
    /// (refused, reset, timed out).
    func get(_ url: String, timeout: Duration) async throws -> (status: Int, body: [UInt8])
}

/// Settings of peer sharing (ferryd's `peer_*` configuration keys).
public struct PeerOptions: Sendable {
    /// A whole chunk request (including the home peer's own registry fetch) must finish in this.
    public var requestTimeout: Duration
    /// Chunk requests one read sends at once.
    public var parallelRequests: Int
    /// Bytes per second the server sends to all peers together; 0 means no limit.
    public var serveRateLimit: UInt64
    /// Requests the server handles at once; more are answered 503 (the asker goes elsewhere).
    public var serveConcurrency: Int
    /// Requests per second for chunks the store does not hold (each costs a lookup, and with
    /// `fetch=1` a registry fetch); more are answered 503. 0: no limit.
    public var missesPerSecond: Int

    public init(requestTimeout: Duration = .seconds(10), parallelRequests: Int = 8, serveRateLimit: UInt64 = 0,
                serveConcurrency: Int = 64, missesPerSecond: Int = 256) {
        self.missesPerSecond = max(0, missesPerSecond)
        self.requestTimeout = requestTimeout
        self.parallelRequests = max(1, parallelRequests)
        self.serveRateLimit = serveRateLimit
        self.serveConcurrency = max(1, serveConcurrency)
    }
}

/// Built-in peer sharing: the peer set, the chunks this node can fetch itself (so that it can be
/// their home), the coalesced home fetches, the client side (`source(fallback:)`) and the server
/// side (`startServer`). Only chunk digests and chunk bytes cross between peers.
public final class PeerNetwork: Sendable {
    public let peers: PeerSet
    public let metrics = PeerMetrics()
    public let options: PeerOptions
    let transport: any PeerTransport
    let store: ChunkStore
    let logger: Logger
    let home: PeerHomeFetches

    /// Where this node can fetch a chunk itself: its blob, its index there and the image's own source.
    struct Location: Sendable {
        var blob: BlobInfo
        var index: Int
        var source: any ChunkSource
    }
    private let locations = Mutex<[[UInt8]: Location]>([:])
    private let checking = Atomic<Bool>(false)

    public init(peers: PeerSet, transport: any PeerTransport, store: ChunkStore, options: PeerOptions = PeerOptions(), logger: Logger) {
        self.peers = peers
        self.transport = transport
        self.store = store
        self.options = options
        self.logger = logger
        home = PeerHomeFetches(store: store, metrics: metrics)
    }

    /// Makes the chunks of an image this node registered fetchable on behalf of peers, from
    /// `source` (the image's registry source, with this node's credentials).
    public func register(_ metadata: BootstrapMetadata, source: any ChunkSource) {
        locations.withLock { table in
            for blob in metadata.blobs {
                for (i, chunk) in blob.chunks.enumerated() where table[chunk.digest] == nil {
                    table[chunk.digest] = Location(blob: blob, index: i, source: source)
                }
            }
        }
    }

    func location(of digest: [UInt8]) -> Location? { locations.withLock { $0[digest] } }

    /// A chunk source that asks each chunk's home peer first and reads through `fallback` (the
    /// image's registry source) what this node is home of or the peers could not give.
    public func source(fallback: any ChunkSource) -> PeerChunkSource {
        PeerChunkSource(network: self, fallback: fallback)
    }

    /// Health-checks (`GET /health`) the peers whose backoff has passed, every `interval`, from a
    /// task of its own (the checks of one pass run side by side).
    public func startHealthChecks(every interval: Duration = .milliseconds(500)) {
        guard !checking.exchange(true, ordering: .relaxed) else { return }
        Task.detached { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                let due = peers.dueForCheck()
                guard !due.isEmpty else { continue }
                await withTaskGroup(of: Void.self) { group in
                    for peer in due { group.addTask { await self.check(peer) } }
                }
            }
        }
    }

    private func check(_ peer: String) async {
        do {
            let answer = try await transport.get("http://\(peer)/health", timeout: .seconds(1))
            if answer.status == 200 {
                peers.markHealthy(peer)
                logger.info("peer is back", metadata: ["peer": "\(peer)"])
                return
            }
        } catch {}
        peers.markFailed(peer, .unreachable)
    }

    /// The `ferry_peer_*` series of a scrape.
    public func writeMetrics(into out: inout MetricsWriter) {
        for peer in peers.snapshot() {
            out.gauge("ferry_peer_live", "Whether a peer is currently used (1) or in backoff (0).", labels: [("peer", peer.peer)], peer.live ? 1 : 0)
        }
        for (peer, figures) in metrics.peers.sorted(by: { $0.key < $1.key }) {
            let labels = [("peer", peer)]
            out.counter("ferry_peer_chunks_received_total", "Chunks received from a peer and verified.", labels: labels, figures.chunks)
            out.counter("ferry_peer_bytes_received_total", "Stored bytes received from a peer and verified.", labels: labels, figures.bytes)
            out.counter("ferry_peer_bad_chunks_total", "Chunks a peer served whose bytes did not match their digest.", labels: labels, figures.badChunks)
            out.counter("ferry_peer_failures_total", "Requests to a peer that were refused, timed out or answered wrongly.", labels: labels, figures.failures)
            out.counter("ferry_peer_misses_total", "Requests a peer answered without the chunk.", labels: labels, figures.misses)
        }
        let served = metrics.server
        out.counter("ferry_peer_served_chunks_total", "Chunks this node served to peers.", served.chunks)
        out.counter("ferry_peer_served_bytes_total", "Bytes this node served to peers.", served.bytes)
        out.counter("ferry_peer_served_misses_total", "Peer requests for chunks this node could not serve.", served.misses)
        out.counter("ferry_peer_served_rejected_total", "Peer requests turned away by the rate limit.", served.rejected)
        out.counter("ferry_peer_served_refused_addresses_total",
                    "Peer-port connections closed unanswered: from an address not in the peer list.", served.refusedAddresses)
        out.counter("ferry_peer_home_fetches_total", "Chunks this node fetched from its own sources as their home.", metrics.homeFetches.current)
        out.counter("ferry_peer_fallback_chunks_total", "Chunks fetched from this node's own sources after peers failed.", metrics.fallbacks.current)
    }
}
