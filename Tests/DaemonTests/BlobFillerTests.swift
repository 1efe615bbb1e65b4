import Blob
import FerrySystem
import Foundation
import Synchronization
import Testing
@testable import Daemon

/// A sink that keeps the blob's address space in memory and counts writes per chunk.
final class MemorySink: ChunkSink {
    let space: Mutex<[UInt8]>
    let writes = Mutex<[Int: Int]>([:])
    init(size: UInt64) { space = Mutex([UInt8](repeating: 0, count: Int(size))) }
    func write(chunk index: Int, info: ChunkInfo, bytes: ArraySlice<UInt8>) async throws {
        space.withLock { s in s.replaceSubrange(Int(info.uncompressedOffset) ..< Int(info.uncompressedOffset) + bytes.count, with: bytes) }
        writes.withLock { $0[index, default: 0] += 1 }
    }
}

/// A source serving a blob from memory, optionally corrupting one byte, counting requests.
final class MemorySource: ChunkSource {
    let name: String
    let blobBytes: [UInt8]
    let corruptAt: Int?
    let requests = Counter()
    let delay: Duration
    init(name: String, blobBytes: [UInt8], corruptAt: Int? = nil, delay: Duration = .zero) {
        self.name = name
        self.blobBytes = blobBytes
        self.corruptAt = corruptAt
        self.delay = delay
    }
    func read(blob: BlobInfo, range: Range<UInt64>) async throws -> [UInt8] {
        requests.add(1)
        if delay > .zero { try await Task.sleep(for: delay) }
        var out = Array(blobBytes[Int(range.lowerBound) ..< Int(range.upperBound)])
        if let c = corruptAt, range.contains(UInt64(c)) { out[c - Int(range.lowerBound)] ^= 0xff }
        return out
    }
}

struct TestBlob {
    let info: BlobInfo
    let bytes: [UInt8]
    /// Expected address space content.
    let space: [UInt8]

    static func make(chunks: Int, chunkSize: Int = 65536) throws -> TestBlob {
        let dir = NSTemporaryDirectory() + "ferry-filler-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let writer = try BlobWriter(path: dir + "/blob")
        var space: [UInt8] = []
        for c in 0..<chunks {
            let size = c == chunks - 1 ? chunkSize / 3 : chunkSize
            let data = (0..<size).map { UInt8(truncatingIfNeeded: ($0 * 31 + c * 7) % 251 ^ ($0 >> 9)) }
            _ = try writer.append(try ChunkCodec.encode(data, compression: .lz4))
            space += data + [UInt8](repeating: 0, count: (4096 - size % 4096) % 4096)
        }
        let info = try writer.finish()
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/blob")))
        return TestBlob(info: info, bytes: bytes, space: space)
    }
}

@Suite struct BlobFillerTests {
    @Test func fillsExactlyTheChunksOfTheRangeAndVerifiesEveryByte() async throws {
        let blob = try TestBlob.make(chunks: 10)
        let sink = MemorySink(size: blob.info.uncompressedSize)
        let source = MemorySource(name: "mem", blobBytes: blob.bytes)
        let stats = FillStatistics()
        let filler = BlobFiller(blob: blob.info, store: nil, sources: [source], sink: sink, gate: FetchGate(limit: 4), stats: stats)
        try await filler.fill(65536 * 3 + 10 ..< 65536 * 4 + 1)
        #expect(sink.writes.withLock { $0 } == [3: 1, 4: 1])
        #expect(source.requests.current == 1, "adjacent chunks are fetched with one request")
        #expect(stats.bytesFetched == UInt64(blob.info.chunks[3].compressedSize + blob.info.chunks[4].compressedSize))
        try await filler.fill(0 ..< blob.info.uncompressedSize)
        #expect(sink.space.withLock { $0 } == blob.space)
        #expect(sink.writes.withLock { $0.values.allSatisfy { $0 == 1 } })
        #expect(stats.cacheHits.current == 2)
    }

    @Test func concurrentRequestsForOneChunkFetchItOnce() async throws {
        let blob = try TestBlob.make(chunks: 4)
        let sink = MemorySink(size: blob.info.uncompressedSize)
        let source = MemorySource(name: "slow", blobBytes: blob.bytes, delay: .milliseconds(50))
        let filler = BlobFiller(blob: blob.info, store: nil, sources: [source], sink: sink, gate: FetchGate(limit: 8), stats: FillStatistics())
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 { group.addTask { try await filler.fill(100 ..< 200) } }
            try await group.waitForAll()
        }
        #expect(source.requests.current == 1)
        #expect(sink.writes.withLock { $0 } == [0: 1])
    }

    @Test func badBytesFromOneSourceFallBackToTheNextAndAreCounted() async throws {
        let blob = try TestBlob.make(chunks: 3)
        let sink = MemorySink(size: blob.info.uncompressedSize)
        let bad = MemorySource(name: "bad-peer", blobBytes: blob.bytes, corruptAt: Int(blob.info.chunks[1].compressedOffset) + 5)
        let good = MemorySource(name: "registry", blobBytes: blob.bytes)
        let stats = FillStatistics()
        let filler = BlobFiller(blob: blob.info, store: nil, sources: [bad, good], sink: sink, gate: FetchGate(limit: 2), stats: stats)
        try await filler.fill(0 ..< blob.info.uncompressedSize)
        #expect(sink.space.withLock { $0 } == blob.space)
        #expect(stats.failuresBySource["bad-peer"] == 1)
        #expect(good.requests.current == 1)
    }

    @Test func whenEverySourceLiesTheFillFailsNamingBlobAndChunk() async throws {
        let blob = try TestBlob.make(chunks: 3)
        let sink = MemorySink(size: blob.info.uncompressedSize)
        let bad = MemorySource(name: "bad", blobBytes: blob.bytes, corruptAt: Int(blob.info.chunks[2].compressedOffset))
        let filler = BlobFiller(blob: blob.info, store: nil, sources: [bad], sink: sink, gate: FetchGate(limit: 2), stats: FillStatistics())
        await #expect(throws: FillError.self) { try await filler.fill(blob.info.chunks[2].uncompressedOffset ..< blob.info.uncompressedSize) }
        #expect(sink.writes.withLock { $0 }.isEmpty, "nothing unverified reaches the sink")
        do {
            try await filler.fill(blob.info.chunks[2].uncompressedOffset ..< blob.info.chunks[2].uncompressedOffset + 1)
        } catch {
            #expect("\(error)".contains(blob.info.hexDigest) && "\(error)".contains("chunk 2"))
        }
        // The other chunks still work.
        let good = BlobFiller(blob: blob.info, store: nil, sources: [bad], sink: sink, gate: FetchGate(limit: 2), stats: FillStatistics())
        try await good.fill(0 ..< 4096)
    }

    @Test func theStoreServesARemountWithoutTheNetwork() async throws {
        let blob = try TestBlob.make(chunks: 5)
        let store = try ChunkStore(directory: NSTemporaryDirectory() + "ferry-store-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(atPath: store.directory) }
        let source = MemorySource(name: "registry", blobBytes: blob.bytes)
        let first = BlobFiller(blob: blob.info, store: store, sources: [source], sink: MemorySink(size: blob.info.uncompressedSize),
                               gate: FetchGate(limit: 2), stats: FillStatistics())
        try await first.fill(0 ..< blob.info.uncompressedSize)
        let requestsAfterFirst = source.requests.current
        let sink = MemorySink(size: blob.info.uncompressedSize)
        let stats = FillStatistics()
        let second = BlobFiller(blob: blob.info, store: store, sources: [source], sink: sink, gate: FetchGate(limit: 2), stats: stats)
        try await second.fill(0 ..< blob.info.uncompressedSize)
        #expect(source.requests.current == requestsAfterFirst)
        #expect(stats.storeHits.current == 5)
        #expect(sink.space.withLock { $0 } == blob.space)
    }

    /// The store does not fsync its chunk files (a save is on the fill path); a file torn by a
    /// crash — cut short, or left with its length but other bytes — is found on load, removed
    /// and fetched again, never served.
    @Test func tornStoreFilesAreDetectedOnLoadAndFetchedAgain() async throws {
        let blob = try TestBlob.make(chunks: 3)
        let store = try ChunkStore(directory: NSTemporaryDirectory() + "ferry-store-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(atPath: store.directory) }
        let source = MemorySource(name: "registry", blobBytes: blob.bytes)
        try await BlobFiller(blob: blob.info, store: store, sources: [source], sink: MemorySink(size: blob.info.uncompressedSize),
                             gate: FetchGate(limit: 2), stats: FillStatistics()).fill(0 ..< blob.info.uncompressedSize)
        func file(_ i: Int) -> String {
            let hex = hexString(blob.info.chunks[i].digest)
            return "\(store.directory)/chunks/\(hex.prefix(2))/\(hex.dropFirst(2))"
        }
        // Chunk 0 cut in half; chunk 1 the right length with its last byte changed; chunk 2 empty.
        let zero = try #require(FileManager.default.contents(atPath: file(0)))
        try Data(zero.prefix(zero.count / 2)).write(to: URL(fileURLWithPath: file(0)))
        var one = try #require(FileManager.default.contents(atPath: file(1)))
        one[one.count - 1] ^= 0x5a
        try one.write(to: URL(fileURLWithPath: file(1)))
        try Data().write(to: URL(fileURLWithPath: file(2)))
        for i in 0..<3 { #expect(store.load(blob.info.chunks[i]) == nil, "torn chunk \(i) was served") }
        for i in 0..<3 { #expect(!FileManager.default.fileExists(atPath: file(i)), "torn chunk \(i) was kept") }
        let requestsBefore = source.requests.current
        let sink = MemorySink(size: blob.info.uncompressedSize)
        let stats = FillStatistics()
        try await BlobFiller(blob: blob.info, store: store, sources: [source], sink: sink, gate: FetchGate(limit: 2), stats: stats)
            .fill(0 ..< blob.info.uncompressedSize)
        #expect(source.requests.current > requestsBefore)
        #expect(stats.storeHits.current == 0)
        #expect(sink.space.withLock { $0 } == blob.space)
        for i in 0..<3 { #expect(store.load(blob.info.chunks[i]) != nil, "chunk \(i) was not stored again") }
    }
}

@Suite struct ReadaheadTests {
    static let limits = FillLimits(batchBytes: 4 << 20, readaheadBytes: 512 << 10, readaheadTrigger: 256 << 10)

    static func filler(for blob: TestBlob, limits: FillLimits = limits, source: MemorySource? = nil)
        -> (BlobFiller, MemorySink, FillStatistics) {
        let sink = MemorySink(size: blob.info.uncompressedSize)
        let stats = FillStatistics()
        let filler = BlobFiller(blob: blob.info, store: nil, sources: [source ?? MemorySource(name: "mem", blobBytes: blob.bytes)],
                                sink: sink, limits: limits, gate: FetchGate(limit: 4), stats: stats)
        return (filler, sink, stats)
    }

    /// Waits (at most 5 s) until `condition` holds; the readahead runs in the background.
    static func eventually(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<500 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }

    @Test func aLongSequentialReadFetchesAheadAndEveryChunkOnce() async throws {
        let blob = try TestBlob.make(chunks: 64)
        let (filler, sink, stats) = Self.filler(for: blob)
        // Eight 64 KiB requests in order: past the 256 KiB trigger, the next chunks are fetched unasked.
        for c in 0..<8 { try await filler.fill(UInt64(c) * 65536 ..< UInt64(c + 1) * 65536) }
        #expect(try await Self.eventually { filler.isPresent(12) }, "chunks after the run arrive without being asked for")
        #expect(stats.readaheadChunks.current > 0)
        // The rest of the blob, still in order: every chunk is fetched exactly once, bytes verified.
        var offset: UInt64 = 8 * 65536
        while offset < blob.info.uncompressedSize {
            let end = min(offset + 65536, blob.info.uncompressedSize)
            try await filler.fill(offset ..< end)
            offset = end
        }
        #expect(sink.space.withLock { $0 } == blob.space)
        #expect(sink.writes.withLock { w in w.count == 64 && w.values.allSatisfy { $0 == 1 } })
    }

    /// The readahead window slides 64 KiB per request; fetching its new edge each time would be one
    /// source request per chunk. It waits for a batch's worth (here a quarter of the window).
    @Test func aLongSequentialReadAsksTheSourceInBatchesNotChunkByChunk() async throws {
        let blob = try TestBlob.make(chunks: 64)
        let source = MemorySource(name: "mem", blobBytes: blob.bytes)
        let (filler, sink, _) = Self.filler(for: blob, limits: FillLimits(batchBytes: 4 << 20, readaheadBytes: 2 << 20, readaheadTrigger: 256 << 10),
                                            source: source)
        var offset: UInt64 = 0
        while offset < blob.info.uncompressedSize {
            let end = min(offset + 65536, blob.info.uncompressedSize)
            try await filler.fill(offset ..< end)
            offset = end
        }
        #expect(try await Self.eventually { filler.presentCount == 64 })
        #expect(sink.space.withLock { $0 } == blob.space)
        let requests = source.requests.current
        print("64 chunks read in order: \(requests) source requests")
        #expect(requests <= 20, "\(requests) source requests for 64 chunks")
    }

    @Test func aShortReadFetchesOnlyItsChunks() async throws {
        let blob = try TestBlob.make(chunks: 16)
        let (filler, _, stats) = Self.filler(for: blob)
        for c in 0..<3 { try await filler.fill(UInt64(c) * 65536 ..< UInt64(c + 1) * 65536) }
        try await Task.sleep(for: .milliseconds(100))
        #expect(filler.presentCount == 3)
        #expect(stats.readaheadChunks.current == 0)
    }

    @Test func scatteredReadsDoNotTriggerReadahead() async throws {
        let blob = try TestBlob.make(chunks: 64)
        let (filler, _, stats) = Self.filler(for: blob)
        for c in [40, 3, 22, 9, 57, 30, 14, 48, 1, 35] { try await filler.fill(UInt64(c) * 65536 ..< UInt64(c) * 65536 + 100) }
        try await Task.sleep(for: .milliseconds(100))
        #expect(filler.presentCount == 10)
        #expect(stats.readaheadChunks.current == 0)
    }
}
