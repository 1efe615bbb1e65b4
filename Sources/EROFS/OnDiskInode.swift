/// `struct erofs_inode_compact`, 32 bytes: an inode whose timestamps are the superblock's
/// build time and whose uid/gid/nlink fit 16 bits and size 32 bits.
public struct CompactInode: OnDiskStruct {
    public static let size = 32

    /// `i_format`: bit 0 version (0 = compact), bits 1...3 data layout.
    public var format: UInt16 = 0               // 0
    /// `i_xattr_icount`: 0, or 1 + (inline xattr bytes - 12) / 4.
    public var xattrCount: UInt16 = 0           // 2
    public var mode: UInt16 = 0                 // 4
    public var nlink: UInt16 = 0                // 6
    public var fileSize: UInt32 = 0             // 8
    /// Reserved in Linux 6.1; newer kernels read it as seconds added to the build time
    /// (`i_mtime`). Ferry writes 0 so both agree.
    public var mtimeDelta: UInt32 = 0           // 12
    /// `i_u`: raw_blkaddr, rdev, or the chunk format (low 16 bits) of chunk-based inodes.
    public var union: UInt32 = 0                // 16
    /// `i_ino`, only for 32-bit `stat`.
    public var inodeNumber: UInt32 = 0          // 20
    public var uid: UInt16 = 0                  // 24
    public var gid: UInt16 = 0                  // 26
    // 28...31 reserved

    public init() {}

    public func encode(into bytes: inout [UInt8], at offset: Int) {
        bytes.storeLE16(format, at: offset + 0)
        bytes.storeLE16(xattrCount, at: offset + 2)
        bytes.storeLE16(mode, at: offset + 4)
        bytes.storeLE16(nlink, at: offset + 6)
        bytes.storeLE32(fileSize, at: offset + 8)
        bytes.storeLE32(mtimeDelta, at: offset + 12)
        bytes.storeLE32(union, at: offset + 16)
        bytes.storeLE32(inodeNumber, at: offset + 20)
        bytes.storeLE16(uid, at: offset + 24)
        bytes.storeLE16(gid, at: offset + 26)
        bytes.storeLE32(0, at: offset + 28)
    }

    public static func decode(_ bytes: [UInt8], at offset: Int) throws -> CompactInode {
        try requireBytes(bytes, at: offset, count: size, for: "compact inode")
        var inode = CompactInode()
        inode.format = bytes.loadLE16(at: offset + 0)
        inode.xattrCount = bytes.loadLE16(at: offset + 2)
        inode.mode = bytes.loadLE16(at: offset + 4)
        inode.nlink = bytes.loadLE16(at: offset + 6)
        inode.fileSize = bytes.loadLE32(at: offset + 8)
        inode.mtimeDelta = bytes.loadLE32(at: offset + 12)
        inode.union = bytes.loadLE32(at: offset + 16)
        inode.inodeNumber = bytes.loadLE32(at: offset + 20)
        inode.uid = bytes.loadLE16(at: offset + 24)
        inode.gid = bytes.loadLE16(at: offset + 26)
        return inode
    }
}

/// `struct erofs_inode_extended`, 64 bytes: full 32-bit ids and nlink, 64-bit size, and its
/// own mtime.
public struct ExtendedInode: OnDiskStruct {
    public static let size = 64

    public var format: UInt16 = 1               // 0: bit 0 set = extended
    public var xattrCount: UInt16 = 0           // 2
    public var mode: UInt16 = 0                 // 4
    // 6...7 reserved (i_nb in newer kernels, only meaningful with the 48BIT feature)
    public var fileSize: UInt64 = 0             // 8
    public var union: UInt32 = 0                // 16
    public var inodeNumber: UInt32 = 0          // 20
    public var uid: UInt32 = 0                  // 24
    public var gid: UInt32 = 0                  // 28
    /// Seconds since the epoch, two's complement for pre-1970 times.
    public var mtime: UInt64 = 0                // 32
    public var mtimeNanoseconds: UInt32 = 0     // 40
    public var nlink: UInt32 = 0                // 44
    // 48...63 reserved

    public init() {}

    public func encode(into bytes: inout [UInt8], at offset: Int) {
        bytes.storeLE16(format, at: offset + 0)
        bytes.storeLE16(xattrCount, at: offset + 2)
        bytes.storeLE16(mode, at: offset + 4)
        bytes.storeLE16(0, at: offset + 6)
        bytes.storeLE64(fileSize, at: offset + 8)
        bytes.storeLE32(union, at: offset + 16)
        bytes.storeLE32(inodeNumber, at: offset + 20)
        bytes.storeLE32(uid, at: offset + 24)
        bytes.storeLE32(gid, at: offset + 28)
        bytes.storeLE64(mtime, at: offset + 32)
        bytes.storeLE32(mtimeNanoseconds, at: offset + 40)
        bytes.storeLE32(nlink, at: offset + 44)
        bytes.replaceSubrange(offset + 48..<offset + 64, with: repeatElement(0, count: 16))
    }

    public static func decode(_ bytes: [UInt8], at offset: Int) throws -> ExtendedInode {
        try requireBytes(bytes, at: offset, count: size, for: "extended inode")
        var inode = ExtendedInode()
        inode.format = bytes.loadLE16(at: offset + 0)
        inode.xattrCount = bytes.loadLE16(at: offset + 2)
        inode.mode = bytes.loadLE16(at: offset + 4)
        inode.fileSize = bytes.loadLE64(at: offset + 8)
        inode.union = bytes.loadLE32(at: offset + 16)
        inode.inodeNumber = bytes.loadLE32(at: offset + 20)
        inode.uid = bytes.loadLE32(at: offset + 24)
        inode.gid = bytes.loadLE32(at: offset + 28)
        inode.mtime = bytes.loadLE64(at: offset + 32)
        inode.mtimeNanoseconds = bytes.loadLE32(at: offset + 40)
        inode.nlink = bytes.loadLE32(at: offset + 44)
        return inode
    }
}
