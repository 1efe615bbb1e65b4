/// `struct erofs_inode_chunk_index`, 8 bytes: one chunk of a chunk-based inode
/// (`EROFS_CHUNK_FORMAT_INDEXES`). The array starts after inode + inline xattrs, aligned to
/// 8 bytes (`erofs_map_blocks` in fs/erofs/data.c).
public struct ChunkIndex: OnDiskStruct {
    public static let size = 8

    /// `advise` in 6.1 (always 0); `startblk_hi` in newer kernels, read only under 48BIT.
    public var advise: UInt16 = 0           // 0
    /// 0 = the image itself, 1...N = device table slots; the kernel masks it with
    /// `roundup_pow_of_two(extra_devices + 1) - 1`.
    public var deviceID: UInt16 = 0         // 2
    /// Block within the device, or `EROFS_NULL_ADDR` for a hole.
    public var blockAddress: UInt32 = 0     // 4

    public init(advise: UInt16 = 0, deviceID: UInt16 = 0, blockAddress: UInt32 = 0) {
        self.advise = advise
        self.deviceID = deviceID
        self.blockAddress = blockAddress
    }

    public func encode(into bytes: inout [UInt8], at offset: Int) {
        bytes.storeLE16(advise, at: offset)
        bytes.storeLE16(deviceID, at: offset + 2)
        bytes.storeLE32(blockAddress, at: offset + 4)
    }

    public static func decode(_ bytes: [UInt8], at offset: Int) throws -> ChunkIndex {
        try requireBytes(bytes, at: offset, count: size, for: "chunk index")
        return ChunkIndex(advise: bytes.loadLE16(at: offset), deviceID: bytes.loadLE16(at: offset + 2),
                          blockAddress: bytes.loadLE32(at: offset + 4))
    }
}
