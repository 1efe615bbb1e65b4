import Blob
import FerrySystem
import Foundation
import Logging
import Synchronization
import Testing
@testable import Daemon

/// Blob caches held in memory, evicted on request (stands in for the fanotify cache files).
final class MemoryBlobCaches: EvictsCachedBlobs {
    let entries: Mutex<[CachedBlob]>
    init(_ entries: [CachedBlob]) { self.entries = Mutex(entries) }
    func cachedBlobs() -> [CachedBlob] { entries.withLock { $0 } }
    func evictCachedBlob(_ blob: String) -> UInt64 {
        entries.withLock { list in
            guard let i = list.firstIndex(where: { $0.blob == blob }) else { return 0 }
            return list.remove(at: i).bytes
        }
    }
}

struct CacheManagerTests {
    static let logger = Logger(label: "test")

    /// A store in a temporary directory holding the blob's chunks, saved in order with distinct
    /// times (chunk 0 least recently used).
    static func store(with blob: TestBlob) throws -> (ChunkStore, [String]) {
        let store = try ChunkStore(directory: NSTemporaryDirectory() + "ferry-cache-\(UUID().uuidString)")
        _ = store.entries()  // index built now, so saves below carry their own times
        for chunk in blob.info.chunks {
            let start = Int(chunk.compressedOffset)
            #expect(store.save(chunk, stored: blob.bytes[start ..< start + Int(chunk.compressedSize)]) == nil)
            usleep(5_000)
        }
        return (store, blob.info.chunks.map { hexString($0.digest) })
    }

    @Test func evictsLeastRecentlyUsedChunksFirst_aLoadMakesAChunkRecent() throws {
        let blob = try TestBlob.make(chunks: 4)
        let (store, digests) = try Self.store(with: blob)
        // Chunk 0 is read again: it becomes the most recent.
        #expect(store.load(blob.info.chunks[0]) == Array(blob.space[0 ..< Int(blob.info.chunks[0].uncompressedSize)]))
        let sizes = Dictionary(uniqueKeysWithValues: store.entries().map { ($0.digest, $0.bytes) })
        let manager = CacheManager(limit: (sizes[digests[0]] ?? 0) + (sizes[digests[3]] ?? 0), store: store, blobCaches: nil, logger: Self.logger)
        let report = manager.collect(pinned: PinnedContent())
        #expect(report.evictedChunks == 2)
        #expect(Set(store.entries().map(\.digest)) == [digests[0], digests[3]], "chunks 1 and 2 were the least recently used")
        #expect(report.bytesAfter <= manager.limit ?? 0)
    }

    @Test func pinnedChunksAndBlobsStay_evenAboveTheLimit() throws {
        let blob = try TestBlob.make(chunks: 4)
        let (store, digests) = try Self.store(with: blob)
        let caches = MemoryBlobCaches([CachedBlob(blob: "old", bytes: 1000, lastUse: 1), CachedBlob(blob: "mounted", bytes: 5000, lastUse: 0),
                                       CachedBlob(blob: "new", bytes: 1000, lastUse: Date().timeIntervalSince1970 + 100)])
        let manager = CacheManager(limit: 0, store: store, blobCaches: caches, logger: Self.logger)
        let report = manager.collect(pinned: PinnedContent(chunks: [digests[1]], blobs: ["mounted"]))
        #expect(store.entries().map(\.digest) == [digests[1]], "only the pinned chunk is left")
        #expect(caches.cachedBlobs().map(\.blob) == ["mounted"], "only the mounted image's cache file is left")
        #expect(report.evictedBlobCaches == 2 && report.evictedChunks == 3)
        #expect(report.pinnedBytes == 5000 + (store.entries().first?.bytes ?? 0))
    }

    @Test func chunksAndCacheFilesCompeteInOneLRUOrder() throws {
        let blob = try TestBlob.make(chunks: 2)
        let caches = MemoryBlobCaches([CachedBlob(blob: "ancient", bytes: 100, lastUse: 1)])
        let (store, digests) = try Self.store(with: blob)
        caches.entries.withLock { $0.append(CachedBlob(blob: "future", bytes: 100, lastUse: Date().timeIntervalSince1970 + 100)) }
        let secondChunk = store.entries().first { $0.digest == digests[1] }?.bytes ?? 0
        // Room for everything but the oldest cache file and the first chunk.
        let manager = CacheManager(limit: secondChunk + 100, store: store, blobCaches: caches, logger: Self.logger)
        _ = manager.collect(pinned: PinnedContent())
        #expect(caches.cachedBlobs().map(\.blob) == ["future"])
        #expect(store.entries().map(\.digest) == [digests[1]])
    }

    @Test func aTargetOverridesTheLimit_noLimitMeansNothingIsEvictedPeriodically() throws {
        let blob = try TestBlob.make(chunks: 3)
        let (store, _) = try Self.store(with: blob)
        let manager = CacheManager(limit: nil, store: store, blobCaches: nil, logger: Self.logger)
        let report = manager.collect(pinned: PinnedContent(), target: store.storedBytes)
        #expect(report.evictedChunks == 0)
        _ = manager.collect(pinned: PinnedContent(), target: 0)
        #expect(store.entries().isEmpty)
    }

    @Test(arguments: [("512", 512), ("4K", 4096), ("4KiB", 4096), ("4kb", 4096), ("16M", 16 << 20), ("20G", 20 << 30), ("1T", 1 << 40)])
    func byteCountsParse(text: String, bytes: UInt64) {
        #expect(parseByteCount(text) == bytes)
    }

    @Test(arguments: ["", "K", "12X", "-1", "1.5G", "99999999999999T"])
    func badByteCountsAreRejected(text: String) {
        #expect(parseByteCount(text) == nil)
    }

    @Test func configurationReadsCacheLimitAsNumberOrSize() throws {
        let path = NSTemporaryDirectory() + "ferryd-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try #"{"cache_limit": "2G", "metrics_listen": "127.0.0.1:9797"}"#.write(toFile: path, atomically: true, encoding: .utf8)
        let configuration = try DaemonConfiguration.load(path: path)
        #expect(configuration.cacheLimit == 2 << 30)
        #expect(configuration.metricsListen == "127.0.0.1:9797")
        try #"{"cache_limit": 4096}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try DaemonConfiguration.load(path: path).cacheLimit == 4096)
        try #"{"cache_limit": "lots"}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: DaemonError.self) { try DaemonConfiguration.load(path: path) }
    }
}
