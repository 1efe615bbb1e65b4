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

    /// Prometheus text exposition of every series of the daemon (`GET /metrics`).
    public func metricsText() -> String {
        scrapedSeries.scrape { out in
            let images = imageSummaries()
            out.gauge("ferry_images", "Images registered with ferryd.", Double(images.count))
            for image in images {
                let labels = [("image", String(image.id.prefix(12)))]
                out.counter("ferry_bytes_requested_total", "Bytes the kernel asked for.", labels: labels, image.bytesRequested)
                out.counter("ferry_chunks_verified_total", "Chunks fetched and verified.", labels: labels, image.chunksVerified)
                out.counter("ferry_chunk_verify_failures_total", "Chunks a source returned with wrong bytes.", labels: labels, image.chunksFailed)
                out.counter("ferry_cache_hits_total", "Chunks found already in the cache.", labels: labels, image.cacheHits)
                out.counter("ferry_store_hits_total", "Chunks served from the local chunk store.", labels: labels, image.storeHits)
                for (source, bytes) in image.bytesBySource.sorted(by: { $0.key < $1.key }) {
                    out.counter("ferry_bytes_fetched_total", "Compressed bytes fetched, by source.",
                                labels: labels + [("source", source)], bytes)
                }
            }
            out.gauge("ferry_uptime_seconds", "Seconds since ferryd started.", Date().timeIntervalSince(started).rounded())
            for more in extraMetrics { more(&out) }
            writeServiceMetrics(images, into: &out)
        }
    }
}
