import Foundation
import Blob
import Synchronization

extension FerryDaemon {
    /// Per-image figures for `GET /images` and `ferry status`.
    public struct ImageSummary: Codable, Sendable {
        public var id: String
        public var reference: String
        public var mountpoints: [String]
        public var blobs: Int
        public var chunks: Int
        public var uncompressedBytes: UInt64
        public var bytesRequested: Int
        public var bytesFetched: UInt64
        /// What `bytesFetched` holds once decompressed.
        public var uncompressedBytesFetched: Int
        public var bytesBySource: [String: UInt64]
        public var chunksVerified: Int
        public var chunksFailed: Int
        public var cacheHits: Int
        public var storeHits: Int
        /// Bytes of the image's blob caches on disk (cache files), shared with images using the same blobs.
        public var cachedBytes: UInt64?
    }

    public func imageSummaries() -> [ImageSummary] {
        let (images, mounts) = state.withLock { ($0.images, $0.mounts) }
        let cached = (backend as? any EvictsCachedBlobs).map { Dictionary($0.cachedBlobs().map { ($0.blob, $0.bytes) }, uniquingKeysWith: +) }
        return images.values.sorted { $0.id < $1.id }.map { image in
            let s = image.stats
            return ImageSummary(
                id: image.id, reference: image.reference,
                mountpoints: mounts.filter { $0.value.imageID == image.id && $0.value.phase == .mounted }.map(\.key).sorted(),
                blobs: image.metadata.blobs.count, chunks: image.metadata.blobs.reduce(0) { $0 + $1.chunks.count },
                uncompressedBytes: image.metadata.blobs.reduce(0) { $0 + $1.uncompressedSize },
                bytesRequested: s.bytesRequested.current, bytesFetched: s.bytesFetched,
                uncompressedBytesFetched: s.uncompressedBytesFetched.current, bytesBySource: s.bytesBySource,
                chunksVerified: s.chunksVerified.current, chunksFailed: s.chunksFailed.current,
                cacheHits: s.cacheHits.current, storeHits: s.storeHits.current,
                cachedBytes: cached.map { c in image.blobCacheKeys.reduce(0) { $0 + (c[$1] ?? 0) } })
        }
    }

    /// Prometheus text exposition of the daemon's counters.
    public func metricsText() -> String {
        var out = ""
        func metric(_ name: String, _ help: String, _ type: String, _ samples: [(String, String)]) {
            out += "# HELP ferry_\(name) \(help)\n# TYPE ferry_\(name) \(type)\n"
            for (labels, value) in samples { out += "ferry_\(name)\(labels) \(value)\n" }
        }
        let images = imageSummaries()
        func per(_ value: (ImageSummary) -> String) -> [(String, String)] {
            images.map { ("{image=\"\($0.id.prefix(12))\"}", value($0)) }
        }
        metric("images", "Images registered with ferryd.", "gauge", [("", "\(images.count)")])
        metric("bytes_requested_total", "Bytes the kernel asked for.", "counter", per { "\($0.bytesRequested)" })
        metric("chunks_verified_total", "Chunks fetched and verified.", "counter", per { "\($0.chunksVerified)" })
        metric("chunk_verify_failures_total", "Chunks a source returned with wrong bytes.", "counter", per { "\($0.chunksFailed)" })
        metric("cache_hits_total", "Chunks found already in the cache.", "counter", per { "\($0.cacheHits)" })
        metric("store_hits_total", "Chunks served from the local chunk store.", "counter", per { "\($0.storeHits)" })
        var bySource: [(String, String)] = []
        for image in images {
            for (source, bytes) in image.bytesBySource.sorted(by: { $0.key < $1.key }) {
                bySource.append(("{image=\"\(image.id.prefix(12))\",source=\"\(source)\"}", "\(bytes)"))
            }
        }
        metric("bytes_fetched_total", "Compressed bytes fetched, by source.", "counter", bySource)
        metric("uptime_seconds", "Seconds since ferryd started.", "gauge", [("", String(format: "%.0f", Date().timeIntervalSince(started)))])
        for more in extraMetrics { out += more() }
        return out + serviceMetricsText()
    }
}
