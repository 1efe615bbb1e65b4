import FerrySystem
import Foundation
public import Logging
import Synchronization

/// What the daemon must keep: content of mounted images.
public struct PinnedContent: Sendable {
    /// Hex digests of every chunk of every mounted image.
    public var chunks: Set<String>
    /// Cache keys (`RegisteredImage.blobCacheKeys`) of every blob of every mounted image.
    public var blobs: Set<String>

    public init(chunks: Set<String> = [], blobs: Set<String> = []) {
        self.chunks = chunks
        self.blobs = blobs
    }
}

/// Keeps the local caches (the chunk store and the backend's per-blob caches) under
/// `cache_limit` by evicting least recently used entries that no mounted image needs.
///
/// A mounted image's blob caches are never evicted: the kernel reads them directly, and a range
/// punched between an answered request and the read it allowed would read as zeros. Its chunks
/// in the store are kept too (they refill a cache file that a crash damaged). So the limit
/// holds for everything else; `GET /metrics` shows what is pinned when the pinned part alone is
/// larger than the limit.
public final class CacheManager: Sendable {
    /// Bytes the caches may use; nil means unlimited (`ferry gc` still evicts on demand).
    public let limit: UInt64?
    private let store: ChunkStore?
    private let blobCaches: (any EvictsCachedBlobs)?
    private let logger: Logger
    private let diskFullLogged = Atomic<Bool>(false)
    private let running = Mutex<Void>(())

    public init(limit: UInt64?, store: ChunkStore?, blobCaches: (any EvictsCachedBlobs)?, logger: Logger) {
        self.limit = limit
        self.store = store
        self.blobCaches = blobCaches
        self.logger = logger
    }

    /// Bytes in use now.
    public struct Usage: Codable, Sendable, Equatable {
        public var storeBytes: UInt64
        public var blobCacheBytes: UInt64
        public var total: UInt64 { storeBytes + blobCacheBytes }
    }

    public func usage() -> Usage {
        Usage(storeBytes: store?.storedBytes ?? 0, blobCacheBytes: blobCaches?.cachedBlobs().reduce(0) { $0 + $1.bytes } ?? 0)
    }

    /// What one collection did (the answer of `POST /gc`).
    public struct Report: Codable, Sendable, Equatable {
        public var limit: UInt64?
        public var target: UInt64
        public var bytesBefore: UInt64
        public var bytesAfter: UInt64
        public var pinnedBytes: UInt64
        public var evictedChunks: Int
        public var evictedChunkBytes: UInt64
        public var evictedBlobCaches: Int
        public var evictedBlobCacheBytes: UInt64
    }

    /// Evicts least recently used unpinned entries until the caches use at most `target` bytes
    /// (default: the limit; with neither, everything unpinned goes). Blob caches and store chunks
    /// compete in one LRU order. `pinned` is read under the caller's mount lock.
    public func collect(pinned: PinnedContent, target explicitTarget: UInt64? = nil) -> Report {
        running.withLock { _ in
            let target = explicitTarget ?? limit ?? 0
            enum Victim { case chunk(String), blob(String) }
            var candidates: [(lastUse: Double, bytes: UInt64, victim: Victim)] = []
            var used: UInt64 = 0, pinnedBytes: UInt64 = 0
            for entry in store?.entries() ?? [] {
                used += entry.bytes
                if pinned.chunks.contains(entry.digest) { pinnedBytes += entry.bytes } else {
                    candidates.append((entry.lastUse, entry.bytes, .chunk(entry.digest)))
                }
            }
            for cached in blobCaches?.cachedBlobs() ?? [] {
                used += cached.bytes
                if pinned.blobs.contains(cached.blob) { pinnedBytes += cached.bytes } else {
                    candidates.append((cached.lastUse, cached.bytes, .blob(cached.blob)))
                }
            }
            var report = Report(limit: limit, target: target, bytesBefore: used, bytesAfter: used, pinnedBytes: pinnedBytes,
                                evictedChunks: 0, evictedChunkBytes: 0, evictedBlobCaches: 0, evictedBlobCacheBytes: 0)
            for candidate in candidates.sorted(by: { $0.lastUse < $1.lastUse }) where report.bytesAfter > target {
                switch candidate.victim {
                case let .chunk(digest):
                    let freed = store?.remove(digest: digest) ?? 0
                    report.evictedChunks += 1
                    report.evictedChunkBytes += freed
                    report.bytesAfter -= min(report.bytesAfter, freed)
                case let .blob(blob):
                    let freed = blobCaches?.evictCachedBlob(blob) ?? 0
                    report.evictedBlobCaches += 1
                    report.evictedBlobCacheBytes += freed
                    report.bytesAfter -= min(report.bytesAfter, freed)
                }
            }
            if report.evictedChunks + report.evictedBlobCaches > 0 {
                logger.info("cache eviction", metadata: [
                    "before": "\(report.bytesBefore)", "after": "\(report.bytesAfter)", "target": "\(target)",
                    "chunks": "\(report.evictedChunks)", "blob caches": "\(report.evictedBlobCaches)", "pinned": "\(pinnedBytes)"])
                if let store, store.writesSuspended != nil {
                    store.resumeWrites()
                    diskFullLogged.store(false, ordering: .relaxed)
                    logger.notice("chunk store accepts chunks again after eviction")
                }
            }
            if let limit, report.bytesAfter > limit, pinnedBytes > limit {
                logger.warning("mounted images pin more than cache_limit", metadata: ["pinned": "\(pinnedBytes)", "limit": "\(limit)"])
            }
            return report
        }
    }

    /// Whether the chunk store skips saves because the disk is full.
    public var storeWritesSuspended: Bool { store?.writesSuspended != nil }

    /// Notes a full disk once per episode (the store stops saving and says so in its error).
    public func checkDiskFull() {
        guard let reason = store?.writesSuspended else { return }
        if !diskFullLogged.exchange(true, ordering: .relaxed) {
            logger.error("disk full: the chunk store stopped storing chunks; reads are served from the network",
                         metadata: ["reason": "\(reason)"])
        }
    }

    /// Collects every `interval` seconds (when a limit is set), and notes a full disk. The
    /// eviction itself (deleting files) runs on the blocking pool, never on a cooperative thread.
    public func startPeriodic(interval: Double = 10, pinned: @escaping @Sendable () -> PinnedContent) {
        Task.detached { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(interval))
                checkDiskFull()
                if limit != nil || store?.writesSuspended != nil {
                    _ = try? await DedicatedThread.run { [self] in collect(pinned: pinned()) }
                }
            }
        }
    }
}

/// Parses a byte count with an optional K, M, G or T suffix (powers of 1024; `KiB` and `KB`
/// spellings too): "512M", "10G", "1048576".
public func parseByteCount(_ text: String) -> UInt64? {
    var digits = text.trimmingCharacters(in: .whitespaces).uppercased()
    for suffix in ["IB", "B"] where digits.hasSuffix(suffix) && digits.count > suffix.count {
        digits.removeLast(suffix.count)
        break
    }
    let factors: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var factor: UInt64 = 1
    if let last = digits.last, let f = factors[last] {
        factor = f
        digits.removeLast()
    }
    guard let n = UInt64(digits) else { return nil }
    let (product, overflow) = n.multipliedReportingOverflow(by: factor)
    return overflow ? nil : product
}
