/// `struct erofs_super_block`, 128 bytes at byte 1024 of the image (fs/erofs/erofs_fs.h).
///
/// Field names follow Linux 6.1. Newer kernels renamed some (build_time → epoch,
/// build_time_nsec → fixed_nsec, root_nid → rootnid_2b) and gave meaning to bytes that 6.1
/// reserves (a 32-bit build_time at 108, rootnid_8b at 112 under the 48BIT feature). The
/// writer leaves all those reserved bytes zero, which both generations read the same way.
public struct SuperBlock: OnDiskStruct {
    public static let size = 128

    public var magic: UInt32 = Layout.magic                // 0
    public var checksum: UInt32 = 0                        // 4: crc32c, see CRC32C
    public var featureCompat: UInt32 = 0                   // 8
    public var blockSizeBits: UInt8 = Layout.blockSizeBits // 12
    public var extensionSlots: UInt8 = 0                   // 13: sb size = 128 + 16 * n
    public var rootNid: UInt16 = 0                         // 14
    public var inodeCount: UInt64 = 0                      // 16: inos
    /// Seconds of every compact inode's timestamps (two's complement for pre-1970 times).
    public var buildTime: UInt64 = 0                       // 24
    public var buildTimeNanoseconds: UInt32 = 0            // 32
    /// Blocks of the primary device (the image itself).
    public var blocks: UInt32 = 0                          // 36
    public var metaBlockAddress: UInt32 = 0                // 40
    public var xattrBlockAddress: UInt32 = 0               // 44
    public var uuid: [UInt8] = [UInt8](repeating: 0, count: 16)       // 48
    public var volumeName: [UInt8] = [UInt8](repeating: 0, count: 16) // 64
    public var featureIncompat: UInt32 = 0                 // 80
    /// `available_compr_algs` / `lz4_max_distance` union.
    public var compressionInfo: UInt16 = 0                 // 84
    public var extraDevices: UInt16 = 0                    // 86
    /// The device table starts at byte `devt_slotoff * 128` of the image.
    public var deviceSlotOffset: UInt16 = 0                // 88
    public var dirBlockBits: UInt8 = 0                     // 90
    public var packedNid: UInt64 = 0                       // 96

    public init() {}

    public func encode(into bytes: inout [UInt8], at offset: Int) {
        bytes.replaceSubrange(offset..<offset + Self.size, with: repeatElement(0, count: Self.size))
        bytes.storeLE32(magic, at: offset + 0)
        bytes.storeLE32(checksum, at: offset + 4)
        bytes.storeLE32(featureCompat, at: offset + 8)
        bytes[offset + 12] = blockSizeBits
        bytes[offset + 13] = extensionSlots
        bytes.storeLE16(rootNid, at: offset + 14)
        bytes.storeLE64(inodeCount, at: offset + 16)
        bytes.storeLE64(buildTime, at: offset + 24)
        bytes.storeLE32(buildTimeNanoseconds, at: offset + 32)
        bytes.storeLE32(blocks, at: offset + 36)
        bytes.storeLE32(metaBlockAddress, at: offset + 40)
        bytes.storeLE32(xattrBlockAddress, at: offset + 44)
        bytes.storeBytes(fixed(uuid, 16), at: offset + 48)
        bytes.storeBytes(fixed(volumeName, 16), at: offset + 64)
        bytes.storeLE32(featureIncompat, at: offset + 80)
        bytes.storeLE16(compressionInfo, at: offset + 84)
        bytes.storeLE16(extraDevices, at: offset + 86)
        bytes.storeLE16(deviceSlotOffset, at: offset + 88)
        bytes[offset + 90] = dirBlockBits
        bytes.storeLE64(packedNid, at: offset + 96)
    }

    public static func decode(_ bytes: [UInt8], at offset: Int) throws -> SuperBlock {
        try requireBytes(bytes, at: offset, count: size, for: "superblock")
        var sb = SuperBlock()
        sb.magic = bytes.loadLE32(at: offset + 0)
        sb.checksum = bytes.loadLE32(at: offset + 4)
        sb.featureCompat = bytes.loadLE32(at: offset + 8)
        sb.blockSizeBits = bytes[offset + 12]
        sb.extensionSlots = bytes[offset + 13]
        sb.rootNid = bytes.loadLE16(at: offset + 14)
        sb.inodeCount = bytes.loadLE64(at: offset + 16)
        sb.buildTime = bytes.loadLE64(at: offset + 24)
        sb.buildTimeNanoseconds = bytes.loadLE32(at: offset + 32)
        sb.blocks = bytes.loadLE32(at: offset + 36)
        sb.metaBlockAddress = bytes.loadLE32(at: offset + 40)
        sb.xattrBlockAddress = bytes.loadLE32(at: offset + 44)
        sb.uuid = Array(bytes[offset + 48..<offset + 64])
        sb.volumeName = Array(bytes[offset + 64..<offset + 80])
        sb.featureIncompat = bytes.loadLE32(at: offset + 80)
        sb.compressionInfo = bytes.loadLE16(at: offset + 84)
        sb.extraDevices = bytes.loadLE16(at: offset + 86)
        sb.deviceSlotOffset = bytes.loadLE16(at: offset + 88)
        sb.dirBlockBits = bytes[offset + 90]
        sb.packedNid = bytes.loadLE64(at: offset + 96)
        return sb
    }
}

/// `bytes` cut or zero-padded to exactly `count` bytes.
func fixed(_ bytes: [UInt8], _ count: Int) -> [UInt8] {
    bytes.count >= count ? Array(bytes.prefix(count)) : bytes + [UInt8](repeating: 0, count: count - bytes.count)
}
