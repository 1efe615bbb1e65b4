import Blob
import FerrySystem
import Testing

@testable import Converter

@Suite struct ChunkPipelineTests {
    /// Sizes that close batches every way: by chunk count (runs of tiny chunks), by bytes (with
    /// 300 KB chunks among them), and by one chunk larger than a batch (2 MiB); every 11th chunk is
    /// all zeros.
    private static let sizes: [Int] = (0..<700).map { i in
        if i % 97 == 0 { return 2 << 20 }
        if i % 7 == 0 { return 300_000 }
        return 1 + (i * 37) % 4_000
    }

    /// Compressible bytes, long enough for the largest chunk; each chunk starts at its own offset.
    private static let pattern: [UInt8] = (0..<(2 << 20) + 4_096).map { UInt8(truncatingIfNeeded: ($0 / 16) &* 31) }

    private static func fill(_ buffer: inout [UInt8], chunk index: Int, size: Int) {
        if index % 11 == 0 {
            buffer.append(contentsOf: repeatElement(0, count: size))
        } else {
            let start = index % 4_096
            buffer.append(contentsOf: pattern[start..<start + size])
        }
    }

    @Test(arguments: [ChunkCompression.lz4, .zstd], [1, 3, 16])
    func commitsEveryChunkOnceInSubmissionOrderWithItsOwnBytes(compression: ChunkCompression, window: Int) throws {
        var committed: [(tag: Int, chunk: EncodedChunk)] = []
        let pipeline = ChunkPipeline<Int>(compression: compression, window: window, largestChunk: 2 << 20) { chunk, tag in
            committed.append((tag, chunk))
        }
        var expected: [[UInt8]] = []
        for (index, size) in Self.sizes.enumerated() {
            var buffer = pipeline.takeBuffer(capacity: size)
            Self.fill(&buffer, chunk: index, size: size)
            expected.append(buffer)
            try pipeline.submit(buffer, tag: index)
        }
        try pipeline.drain()

        #expect(committed.map(\.tag) == Array(Self.sizes.indices))
        for (tag, chunk) in committed {
            let original = expected[tag]
            #expect(chunk.digest == SHA256.hash(original), "chunk \(tag)")
            #expect(chunk.isAllZero == (tag % 11 == 0), "chunk \(tag)")
            let info = ChunkInfo(uncompressedOffset: 0, uncompressedSize: chunk.uncompressedSize, compressedOffset: 0,
                                 compressedSize: UInt32(chunk.stored.count), compression: chunk.compression, digest: chunk.digest)
            #expect(try ChunkCodec.decode(chunk.stored[...], info: info, blob: "test", index: tag) == original, "chunk \(tag)")
        }
    }

    @Test func recycledBuffersCarryNoBytesIntoLaterChunks() throws {
        // Large buffers come back from the free list; a later, shorter chunk must see none of the
        // earlier chunk's bytes.
        var digests: [Int: [UInt8]] = [:]
        let pipeline = ChunkPipeline<Int>(compression: .lz4, window: 1, largestChunk: 1 << 20) { chunk, tag in digests[tag] = chunk.digest }
        var expected: [Int: [UInt8]] = [:]
        for index in 0..<40 {
            let size = index.isMultiple(of: 2) ? 1 << 20 : 300_000 + index
            var buffer = pipeline.takeBuffer(capacity: size)
            #expect(buffer.isEmpty)
            Self.fill(&buffer, chunk: index + 1, size: size)
            expected[index] = SHA256.hash(buffer)
            try pipeline.submit(buffer, tag: index)
        }
        try pipeline.drain()
        for index in 0..<40 { #expect(digests[index] == expected[index], "chunk \(index)") }
    }
}
