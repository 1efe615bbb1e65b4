/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) as the kernel's `crc32c(seed, p, len)`
/// computes it: the caller passes the seed and no final inversion is applied. EROFS calls it
/// with seed `~0` over the superblock block (`erofs_superblock_csum_verify`, fs/erofs/super.c).
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    static func update(_ seed: UInt32, _ bytes: [UInt8], range: Range<Int>) -> UInt32 {
        var crc = seed
        let table = Self.table
        for index in range {
            crc = table[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
        }
        return crc
    }

    /// The EROFS superblock checksum of `block` (block 0 of the image, at least 1024 + 128
    /// bytes): crc32c(~0) over bytes [1024, min(blockSize, ...)) with the checksum field
    /// (bytes 1028...1031) taken as zero.
    static func superBlockChecksum(block: [UInt8], blockSize: Int) -> UInt32 {
        let start = Layout.superBlockOffset
        let length = blockSize > start ? blockSize - start : blockSize
        var crc = update(0xFFFF_FFFF, block, range: start..<start + 4)
        crc = update(crc, [0, 0, 0, 0], range: 0..<4)
        return update(crc, block, range: start + 8..<start + length)
    }
}
