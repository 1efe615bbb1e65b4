import Testing
@testable import FerrySystem

@Suite struct CompressionTests {
    static func sample(_ n: Int, seed: UInt64) -> [UInt8] {
        var x = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<n).map { i in
            x = x &* 6364136223846793005 &+ 1442695040888963407
            return i % 3 == 0 ? UInt8(truncatingIfNeeded: x >> 33) : UInt8(i % 251)
        }
    }

    @Test(arguments: [0, 1, 4095, 4096, 1 << 20])
    func lz4RoundTripsEveryByte(size: Int) throws {
        let input = Self.sample(size, seed: UInt64(size))
        let packed = try LZ4.compress(input)
        #expect(try LZ4.decompress(packed, originalSize: size) == input)
    }

    @Test(arguments: [0, 1, 4095, 1 << 20])
    func zstdRoundTripsEveryByte(size: Int) throws {
        let input = Self.sample(size, seed: UInt64(size) + 7)
        let packed = try Zstd.compress(input)
        #expect(try Zstd.decompress(packed, originalSize: size) == input)
    }

    @Test func lz4RejectsGarbage() {
        #expect(throws: SystemError.self) { try LZ4.decompress([0xff, 0xff, 0xff, 0x00], originalSize: 100) }
    }

    @Test func zstdRejectsWrongSize() throws {
        let packed = try Zstd.compress([UInt8](repeating: 7, count: 1000))
        #expect(throws: SystemError.self) { try Zstd.decompress(packed, originalSize: 999) }
    }

    @Test func gzipStreamsInSmallPiecesAndDetectsTruncation() throws {
        let input = Self.sample(300_000, seed: 3)
        let packed = try Gzip.compress(input)
        let inflater = try GzipDecompressor()
        var out = [UInt8]()
        var i = 0
        while i < packed.count {
            try inflater.decompress(packed[i..<min(i + 777, packed.count)], into: &out)
            i += 777
        }
        try inflater.finish()
        #expect(out == input)

        let truncated = try GzipDecompressor()
        var partial = [UInt8]()
        try truncated.decompress(packed[0..<packed.count / 2], into: &partial)
        #expect(throws: SystemError.self) { try truncated.finish() }
    }

    @Test func gzipRejectsGarbage() throws {
        let inflater = try GzipDecompressor()
        var out = [UInt8]()
        #expect(throws: SystemError.self) { try inflater.decompress([0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], into: &out); try inflater.finish() }
    }

    @Test func sha256MatchesKnownVectors() {
        #expect(hexString(SHA256.hash([UInt8]())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hexString(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let h = SHA256()
        h.update(Array("a".utf8)); h.update(Array("bc".utf8))
        #expect(hexString(h.finalize()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(bytesFromHex("ba7816") == [0xba, 0x78, 0x16])
        #expect(bytesFromHex("xz") == nil)
    }
}
