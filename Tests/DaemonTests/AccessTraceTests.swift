import Blob
import Testing
@testable import Daemon

/// The access trace keeps each chunk's first read, in order, up to its bound, from many tasks at once.
@Suite struct AccessTraceTests {
    private func chunks(_ trace: AccessTrace) -> [BlobChunk] {
        trace.snapshot().entries.map { BlobChunk(blob: Int($0.blob), chunk: Int($0.chunk)) }
    }

    @Test func keepsFirstReadsInRequestOrder() {
        let trace = AccessTrace(chunkCounts: [10, 200])
        trace.record(blob: 1, chunks: 130..<132)
        trace.record(blob: 0, chunks: 3..<4)
        trace.record(blob: 1, chunks: 64..<65)
        #expect(chunks(trace) == [BlobChunk(blob: 1, chunk: 130), BlobChunk(blob: 1, chunk: 131),
                                  BlobChunk(blob: 0, chunk: 3), BlobChunk(blob: 1, chunk: 64)])
        let offsets = trace.snapshot().entries.map(\.offsetNanoseconds)
        #expect(offsets == offsets.sorted())
    }

    @Test func repeatedAndOverlappingRequestsRecordOnlyNewChunks() {
        let trace = AccessTrace(chunkCounts: [100])
        trace.record(blob: 0, chunks: 10..<20)
        trace.record(blob: 0, chunks: 10..<20)
        trace.record(blob: 0, chunks: 15..<25)
        trace.record(blob: 0, chunks: 5..<12)
        #expect(chunks(trace).map(\.chunk) == Array(10..<25) + Array(5..<10))
    }

    @Test func ignoresChunksOutsideTheImage() {
        let trace = AccessTrace(chunkCounts: [3])
        trace.record(blob: 1, chunks: 0..<1)
        trace.record(blob: -1, chunks: 0..<1)
        trace.record(blob: 0, chunks: 2..<100)
        #expect(chunks(trace) == [BlobChunk(blob: 0, chunk: 2)])
    }

    @Test func stopsKeepingAtItsBoundAndCountsTheRest() {
        let trace = AccessTrace(chunkCounts: [1000], limit: 100)
        trace.record(blob: 0, chunks: 0..<150)
        trace.record(blob: 0, chunks: 0..<150)
        trace.record(blob: 0, chunks: 150..<160)
        let snapshot = trace.snapshot()
        #expect(snapshot.entries.count == 100)
        #expect(snapshot.entries.map(\.chunk) == (0..<100).map(UInt32.init))
        #expect(snapshot.overflow == 60)
    }

    @Test func concurrentRecordersKeepEachChunkOnce() async {
        let trace = AccessTrace(chunkCounts: [4096, 4096])
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    // Every task touches every chunk, each from a different starting point.
                    for step in 0..<512 {
                        let start = (step * 8 + task * 97) % 4096
                        trace.record(blob: task % 2, chunks: start..<min(4096, start + 8))
                        trace.record(blob: 1 - task % 2, chunks: start..<min(4096, start + 8))
                    }
                }
            }
        }
        let recorded = chunks(trace)
        #expect(recorded.count == 8192)
        #expect(Set(recorded).count == 8192)
        let offsets = trace.snapshot().entries.map(\.offsetNanoseconds)
        #expect(offsets == offsets.sorted())
    }

    @Test func aFillerTracesTheChunksAKernelRequestCovers() {
        let trace = AccessTrace(chunkCounts: [4])
        let blob = BlobTraceFixture.blob(chunkSize: 4096, chunks: 4)
        let filler = BlobFiller(blob: blob, store: nil, sources: [], sink: DiscardingSink(), gate: FetchGate(limit: 1),
                                stats: FillStatistics(), trace: trace.blob(0))
        filler.recordAccess(5000 ..< 9000)
        filler.recordAccess(0 ..< 100)
        #expect(chunks(trace).map(\.chunk) == [1, 2, 0])
        #expect(filler.stats.bytesRequested.current == 4100)
    }
}

/// A blob of equal chunks, for tests that need only its address space.
enum BlobTraceFixture {
    static func blob(chunkSize: UInt32, chunks: Int) -> BlobInfo {
        let infos = (0..<chunks).map { i in
            ChunkInfo(uncompressedOffset: UInt64(i) * UInt64(chunkSize), uncompressedSize: chunkSize,
                      compressedOffset: UInt64(i) * UInt64(chunkSize), compressedSize: chunkSize, compression: .none,
                      digest: [UInt8](repeating: UInt8(i), count: 32))
        }
        return BlobInfo(digest: [UInt8](repeating: 0xAB, count: 32), compressedSize: UInt64(chunks) * UInt64(chunkSize),
                        uncompressedSize: UInt64(chunks) * UInt64(chunkSize), chunks: infos)
    }
}
