import Testing
@testable import EROFS

/// Each on-disk struct: its size, the exact bytes of a known value (fields at the offsets of
/// fs/erofs/erofs_fs.h), and decode(encode(x)) == x.
@Suite struct StructCodingTests {
    /// Little-endian `value` of `width` bytes at `offset`, written independently of ByteCoding.
    func place(_ bytes: inout [UInt8], _ offset: Int, _ width: Int, _ value: UInt64) {
        for i in 0..<width { bytes[offset + i] = UInt8((value >> (8 * UInt64(i))) & 0xFF) }
    }

    func roundTrip<T: OnDiskStruct>(_ value: T, expected: [UInt8]) throws {
        #expect(expected.count == T.size)
        let encoded = value.encoded()
        #expect(encoded == expected)
        #expect(try T.decode(encoded, at: 0) == value)
        // At an offset inside a larger buffer too.
        var buffer = [UInt8](repeating: 0xAA, count: T.size + 7)
        value.encode(into: &buffer, at: 5)
        #expect(Array(buffer[5..<5 + T.size]) == expected)
        #expect(try T.decode(buffer, at: 5) == value)
        #expect(throws: EROFSError.self) { try T.decode(Array(expected.dropLast()), at: 0) }
    }

    @Test func superBlock() throws {
        var sb = SuperBlock()
        sb.checksum = 0xDEAD_BEEF
        sb.featureCompat = 3
        sb.extensionSlots = 0
        sb.rootNid = 0x1234
        sb.inodeCount = 0x0102_0304_0506_0708
        sb.buildTime = UInt64(bitPattern: -5)
        sb.buildTimeNanoseconds = 999_999_999
        sb.blocks = 0x1111_2222
        sb.metaBlockAddress = 17
        sb.xattrBlockAddress = 18
        sb.uuid = Array(1...16)
        sb.volumeName = Array("vol".utf8) + [UInt8](repeating: 0, count: 13)
        sb.featureIncompat = 0xC
        sb.compressionInfo = 0x55
        sb.extraDevices = 3
        sb.deviceSlotOffset = 9
        sb.packedNid = 0x77
        var bytes = [UInt8](repeating: 0, count: 128)
        place(&bytes, 0, 4, 0xE0F5_E1E2)
        place(&bytes, 4, 4, 0xDEAD_BEEF)
        place(&bytes, 8, 4, 3)
        place(&bytes, 12, 1, 12)
        place(&bytes, 14, 2, 0x1234)
        place(&bytes, 16, 8, 0x0102_0304_0506_0708)
        place(&bytes, 24, 8, UInt64(bitPattern: -5))
        place(&bytes, 32, 4, 999_999_999)
        place(&bytes, 36, 4, 0x1111_2222)
        place(&bytes, 40, 4, 17)
        place(&bytes, 44, 4, 18)
        for i in 0..<16 { bytes[48 + i] = UInt8(i + 1) }
        bytes[64] = 0x76; bytes[65] = 0x6F; bytes[66] = 0x6C
        place(&bytes, 80, 4, 0xC)
        place(&bytes, 84, 2, 0x55)
        place(&bytes, 86, 2, 3)
        place(&bytes, 88, 2, 9)
        place(&bytes, 96, 8, 0x77)
        try roundTrip(sb, expected: bytes)
    }

    @Test func compactInode() throws {
        var inode = CompactInode()
        inode.format = 0x04
        inode.xattrCount = 5
        inode.mode = 0o104755
        inode.nlink = 3
        inode.fileSize = 0xFFFF_FFFF
        inode.union = 0x1234_5678
        inode.inodeNumber = 42
        inode.uid = 65535
        inode.gid = 7
        var bytes = [UInt8](repeating: 0, count: 32)
        place(&bytes, 0, 2, 0x04)
        place(&bytes, 2, 2, 5)
        place(&bytes, 4, 2, 0o104755)
        place(&bytes, 6, 2, 3)
        place(&bytes, 8, 4, 0xFFFF_FFFF)
        place(&bytes, 16, 4, 0x1234_5678)
        place(&bytes, 20, 4, 42)
        place(&bytes, 24, 2, 65535)
        place(&bytes, 26, 2, 7)
        try roundTrip(inode, expected: bytes)
    }

    @Test func extendedInode() throws {
        var inode = ExtendedInode()
        inode.format = 0x09
        inode.xattrCount = 1
        inode.mode = 0o060660
        inode.fileSize = 1 << 40
        inode.union = 0x801
        inode.inodeNumber = 9
        inode.uid = 100_000
        inode.gid = 4_000_000_000
        inode.mtime = UInt64(bitPattern: -1000)
        inode.mtimeNanoseconds = 5
        inode.nlink = 70000
        var bytes = [UInt8](repeating: 0, count: 64)
        place(&bytes, 0, 2, 0x09)
        place(&bytes, 2, 2, 1)
        place(&bytes, 4, 2, 0o060660)
        place(&bytes, 8, 8, 1 << 40)
        place(&bytes, 16, 4, 0x801)
        place(&bytes, 20, 4, 9)
        place(&bytes, 24, 4, 100_000)
        place(&bytes, 28, 4, 4_000_000_000)
        place(&bytes, 32, 8, UInt64(bitPattern: -1000))
        place(&bytes, 40, 4, 5)
        place(&bytes, 44, 4, 70000)
        try roundTrip(inode, expected: bytes)
    }

    @Test func dirent() throws {
        var bytes = [UInt8](repeating: 0, count: 12)
        place(&bytes, 0, 8, 0x0123_4567_89AB)
        place(&bytes, 8, 2, 36)
        place(&bytes, 10, 1, 7)
        try roundTrip(Dirent(nid: 0x0123_4567_89AB, nameOffset: 36, fileType: 7), expected: bytes)
    }

    @Test func xattrBodyHeader() throws {
        var bytes = [UInt8](repeating: 0, count: 12)
        place(&bytes, 0, 4, 0x8000_0001)
        place(&bytes, 4, 1, 2)
        try roundTrip(XattrBodyHeader(nameFilter: 0x8000_0001, sharedCount: 2), expected: bytes)
    }

    @Test func xattrEntryHeader() throws {
        let entry = XattrEntryHeader(nameLength: 7, nameIndex: 6, valueSize: 0x1234)
        try roundTrip(entry, expected: [7, 6, 0x34, 0x12])
        #expect(entry.entrySize == (4 + 7 + 0x1234 + 3) / 4 * 4)
    }

    @Test func chunkIndex() throws {
        var bytes = [UInt8](repeating: 0, count: 8)
        place(&bytes, 2, 2, 2)
        place(&bytes, 4, 4, 0xFFFF_FFFF)
        try roundTrip(ChunkIndex(deviceID: 2, blockAddress: 0xFFFF_FFFF), expected: bytes)
    }

    @Test func deviceSlot() throws {
        let tag = Array(String(repeating: "ab", count: 32).utf8)
        var bytes = [UInt8](repeating: 0, count: 128)
        for (i, byte) in tag.enumerated() { bytes[i] = byte }
        place(&bytes, 64, 4, 1000)
        place(&bytes, 68, 4, 77)
        try roundTrip(DeviceTableSlot(tag: tag, blocks: 1000, mappedBlockAddress: 77), expected: bytes)
        // A short tag is NUL-padded on disk.
        var short = [UInt8](repeating: 0, count: 128)
        short[0] = 0x78
        place(&short, 64, 4, 1)
        try roundTrip(DeviceTableSlot(tag: [0x78], blocks: 1), expected: short)
    }

    /// The checksum matches what the kernel computes: the Castagnoli check value for
    /// "123456789" is 0xE3069283 = ~crc32c(~0, data), the kernel form without the final xor.
    @Test func crc32cMatchesTheStandardCheckValue() {
        let data = Array("123456789".utf8)
        #expect(~CRC32C.update(0xFFFF_FFFF, data, range: 0..<data.count) == 0xE306_9283)
    }
}
