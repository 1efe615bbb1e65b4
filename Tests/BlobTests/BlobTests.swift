import Testing
import Foundation
@testable import Blob
import FerrySystem

@Suite struct BlobTests {
    static func bytes(_ n: Int, seed: UInt8) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: ($0 / 7) &+ Int(seed)) } }

    static func tempPath(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-blob-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }

    @Test(arguments: [ChunkCompression.none, .lz4, .zstd])
    func blobWriterRoundTripsEveryChunk(compression: ChunkCompression) throws {
        let path = Self.tempPath("blob")
        let writer = try BlobWriter(path: path)
        let inputs = [Self.bytes(1 << 20, seed: 1), Self.bytes(5000, seed: 2), (0..<4096).map { _ in UInt8.random(in: 0...255) }, [7]]
        for input in inputs { _ = try writer.append(try ChunkCodec.encode(input, compression: compression)) }
        let blob = try writer.finish()
        let fileBytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(UInt64(fileBytes.count) == blob.compressedSize)
        #expect(SHA256.hash(fileBytes) == blob.digest)
        #expect(blob.uncompressedSize == (1 << 20) + 8192 + 4096 + 4096)
        for (i, chunk) in blob.chunks.enumerated() {
            #expect(chunk.uncompressedOffset % 4096 == 0)
            let out = try ChunkCodec.decode(fileBytes[Int(chunk.compressedOffset)..<Int(chunk.compressedOffset) + Int(chunk.compressedSize)],
                                            info: chunk, blob: "b", index: i)
            #expect(out == inputs[i])
        }
        // Random data does not compress: it must be stored raw.
        #expect(blob.chunks[2].compression == .none)
    }

    @Test func zeroChunksAreRecognisedAndStillEncoded() throws {
        let zeros = [UInt8](repeating: 0, count: 65536)
        let chunk = try ChunkCodec.encode(zeros, compression: .lz4)
        #expect(chunk.isAllZero && chunk.compression == .lz4 && !chunk.stored.isEmpty && chunk.stored.count < 1024)
        #expect(!ChunkCodec.isAllZero([0, 0, 0, 0, 0, 0, 0, 0, 0, 1]))
    }

    @Test func decodeRejectsTamperedBytes() throws {
        let input = Self.bytes(10000, seed: 9)
        let enc = try ChunkCodec.encode(input, compression: .none)
        let info = ChunkInfo(uncompressedOffset: 0, uncompressedSize: UInt32(input.count), compressedOffset: 0,
                             compressedSize: UInt32(enc.stored.count), compression: .none, digest: enc.digest)
        var bad = enc.stored
        bad[5000] ^= 1
        #expect(throws: BlobError.self) { try ChunkCodec.decode(bad[...], info: info, blob: "b", index: 0) }
        #expect(try ChunkCodec.decode(enc.stored[...], info: info, blob: "b", index: 0) == input)
    }

    @Test func metadataRoundTripsAndDetectsCorruption() throws {
        let path = Self.tempPath("blob")
        let writer = try BlobWriter(path: path)
        for i in 0..<5 { _ = try writer.append(try ChunkCodec.encode(Self.bytes(3000 + i * 5000, seed: UInt8(i)), compression: .lz4)) }
        let blob = try writer.finish()
        let meta = BootstrapMetadata(chunkSizeLog2: 20, compression: .lz4, blobs: [blob, blob], prefetch: [Array("usr/bin/python3".utf8), [0xff, 0x41]])
        let prefix = [UInt8](repeating: 0xAA, count: 8192)
        let file = prefix + meta.encode(at: UInt64(prefix.count))
        let bootstrap = Self.tempPath("bootstrap")
        try Data(file).write(to: URL(fileURLWithPath: bootstrap))
        let (decoded, offset) = try BootstrapMetadata.read(bootstrapAt: bootstrap)
        #expect(offset == 8192)
        #expect(decoded == meta)

        var corrupt = file
        corrupt[8192 + 40] ^= 0xff
        try Data(corrupt).write(to: URL(fileURLWithPath: bootstrap))
        #expect(throws: BlobError.self) { try BootstrapMetadata.read(bootstrapAt: bootstrap) }
        try Data(prefix).write(to: URL(fileURLWithPath: bootstrap))
        #expect(throws: BlobError.self) { try BootstrapMetadata.read(bootstrapAt: bootstrap) }
    }

    @Test func chunkLookupCoversPaddingAndEnds() {
        let chunks = (0..<4).map { i in
            ChunkInfo(uncompressedOffset: UInt64(i) * 8192, uncompressedSize: 5000, compressedOffset: UInt64(i) * 100,
                      compressedSize: 100, compression: .lz4, digest: [UInt8](repeating: UInt8(i), count: 32))
        }
        let blob = BlobInfo(digest: [UInt8](repeating: 0, count: 32), compressedSize: 400, uncompressedSize: 32768, chunks: chunks)
        #expect(blob.chunkIndexes(overlapping: 0..<1) == 0..<1)
        #expect(blob.chunkIndexes(overlapping: 6000..<8193) == 0..<2)
        #expect(blob.chunkIndexes(overlapping: 8192..<32768) == 1..<4)
        #expect(blob.chunkIndexes(overlapping: 40000..<50000).isEmpty)
    }
}

/// Chunk tables are read with bounds: a chunk may not claim more compressed bytes than a codec
/// makes, nor more uncompressed bytes than the chunk size, and a blob may not claim more than
/// `maximumBlobSize` (a 2^63-byte blob trapped in the fscache backend, a 4 GiB chunk was
/// allocated as claimed).
@Suite struct ChunkTableBoundsTests {
    static func decode(_ meta: BootstrapMetadata) throws -> BootstrapMetadata {
        let encoded = meta.encode(at: 0)
        let footer = try BootstrapMetadata.decodeFooter(Array(encoded.suffix(BootstrapMetadata.footerSize)), what: "test")
        return try BootstrapMetadata.decode(section: Array(encoded.dropLast(BootstrapMetadata.footerSize)), footer: footer, what: "test")
    }

    static func blob(uncompressedSize: UInt64 = 8192, chunkSize: UInt32 = 5000, compressedSize: UInt32 = 100) -> BlobInfo {
        let chunk = ChunkInfo(uncompressedOffset: 0, uncompressedSize: chunkSize, compressedOffset: 0, compressedSize: compressedSize,
                              compression: .lz4, digest: [UInt8](repeating: 7, count: 32))
        return BlobInfo(digest: [UInt8](repeating: 1, count: 32), compressedSize: UInt64(compressedSize), uncompressedSize: uncompressedSize,
                        chunks: [chunk])
    }

    @Test func aSensibleTableIsRead() throws {
        let meta = BootstrapMetadata(chunkSizeLog2: 20, compression: .lz4, blobs: [Self.blob()])
        #expect(try Self.decode(meta) == meta)
    }

    @Test(arguments: [
        (ChunkTableBoundsTests.blob(compressedSize: UInt32.max), "compressed bytes"),
        (ChunkTableBoundsTests.blob(chunkSize: 2 << 20, compressedSize: 100), "more than the chunk size"),
        (ChunkTableBoundsTests.blob(uncompressedSize: 1 << 63), "more than"),
    ])
    func oversizedClaimsAreRefused(blob: BlobInfo, reason: String) {
        let meta = BootstrapMetadata(chunkSizeLog2: 20, compression: .lz4, blobs: [blob])
        #expect {
            _ = try Self.decode(meta)
        } throws: { error in
            "\(error)".contains(reason)
        }
    }

    /// The cache key changes with any part of the chunk table, not only with the blob digest.
    @Test func theCacheKeyCoversTheChunkTable() {
        let a = Self.blob()
        var b = a
        b.chunks[0].digest[0] ^= 1
        var c = a
        c.chunks[0].compressedSize += 1
        #expect(a.cacheKey.hasPrefix(a.hexDigest + "-"))
        #expect(a.cacheKey == Self.blob().cacheKey)
        #expect(Set([a.cacheKey, b.cacheKey, c.cacheKey]).count == 3)
        #expect(a.hexDigest == b.hexDigest)
    }
}
