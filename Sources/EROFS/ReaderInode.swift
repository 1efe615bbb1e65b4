/// Where an inode's data lives, decoded from `i_format` and `i_u`.
public enum InodeDataLayout: Sendable, Hashable {
    /// Devices, fifos and sockets carry no data.
    case none
    /// `EROFS_INODE_FLAT_PLAIN`: all data in consecutive blocks from `startBlock`.
    case flatPlain(startBlock: UInt32)
    /// `EROFS_INODE_FLAT_INLINE`: all but the last partial block from `startBlock`; the tail
    /// at image byte `tailOffset` (right after inode and xattrs).
    case flatInline(startBlock: UInt32, tailOffset: UInt64)
    /// `EROFS_INODE_CHUNK_BASED`: `count` chunks of `1 << chunkSizeLog2` bytes whose 8-byte
    /// indexes (or 4-byte block addresses when `indexed` is false) start at image byte `tableOffset`.
    case chunked(chunkSizeLog2: UInt8, indexed: Bool, tableOffset: UInt64, count: Int)
    /// A compressed layout; the reader lists such inodes but cannot read their data.
    case compressed(DataLayoutKind)
}

/// One decoded inode (`erofs_inode_compact` or `erofs_inode_extended` plus its xattrs).
public struct Inode: Sendable, Hashable {
    public var nid: UInt64
    public var isExtended: Bool
    public var type: FileType
    /// The full `st_mode` (type and permission bits).
    public var mode: UInt16
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var mtimeSeconds: Int64
    public var mtimeNanoseconds: UInt32
    public var nlink: UInt32
    /// Device number (`new_encode_dev` form) of character and block devices, else 0.
    public var rdev: UInt32
    /// `i_ino` as stored (only used by 32-bit `stat`).
    public var storedInodeNumber: UInt32
    /// Inline and shared xattrs with their full names, in on-disk order (shared first).
    public var xattrs: [ExtendedAttribute]
    public var layout: InodeDataLayout
    /// Byte offset of the inode in the image.
    public var offset: UInt64
    /// Bytes of inode + inline xattr area.
    public var headSize: Int

    /// The low 12 bits of `mode`.
    public var permissions: UInt16 { mode & 0o7777 }
}

extension ImageReader {
    /// Decodes the inode `nid`, validating its position, format, mode and xattrs.
    public func inode(nid: UInt64) throws -> Inode {
        let base = UInt64(superBlock.metaBlockAddress) << UInt64(superBlock.blockSizeBits)
        guard nid <= (UInt64.max - base) / UInt64(Layout.inodeSlotSize) else {
            throw EROFSError.nidOutOfRange(nid: nid, imageSize: source.size)
        }
        let offset = base + nid * UInt64(Layout.inodeSlotSize)
        guard offset < source.size, source.size - offset >= UInt64(CompactInode.size) else {
            throw EROFSError.nidOutOfRange(nid: nid, imageSize: source.size)
        }
        let available = Int(min(UInt64(ExtendedInode.size), source.size - offset))
        let raw = try source.read(at: offset, count: available, what: "inode \(nid)")
        let format = raw.loadLE16(at: 0)
        guard format & ~0x0F == 0 else {
            throw EROFSError.unsupported(what: "i_format 0x\(String(format, radix: 16)) of nid \(nid)")
        }
        guard let layoutKind = DataLayoutKind(rawValue: UInt8(format >> 1 & 0x7)) else {
            throw EROFSError.unsupported(what: "data layout \(format >> 1 & 0x7) of nid \(nid)")
        }
        var inode: Inode
        var union: UInt32
        if format & 1 == 1 {
            let disk = try ExtendedInode.decode(raw, at: 0)
            union = disk.union
            inode = Inode(nid: nid, isExtended: true, type: .regular, mode: disk.mode, uid: disk.uid, gid: disk.gid,
                          size: disk.fileSize, mtimeSeconds: Int64(bitPattern: disk.mtime),
                          mtimeNanoseconds: disk.mtimeNanoseconds, nlink: disk.nlink, rdev: 0,
                          storedInodeNumber: disk.inodeNumber, xattrs: [], layout: .none, offset: offset,
                          headSize: ExtendedInode.size + xattrAreaSize(disk.xattrCount))
        } else {
            let disk = try CompactInode.decode(raw, at: 0)
            union = disk.union
            // Newer kernels add the compact i_mtime to the build time; 6.1 ignores it (Ferry writes 0).
            inode = Inode(nid: nid, isExtended: false, type: .regular, mode: disk.mode, uid: UInt32(disk.uid),
                          gid: UInt32(disk.gid), size: UInt64(disk.fileSize),
                          mtimeSeconds: Int64(bitPattern: superBlock.buildTime) &+ Int64(disk.mtimeDelta),
                          mtimeNanoseconds: superBlock.buildTimeNanoseconds, nlink: UInt32(disk.nlink), rdev: 0,
                          storedInodeNumber: disk.inodeNumber, xattrs: [], layout: .none, offset: offset,
                          headSize: CompactInode.size + xattrAreaSize(disk.xattrCount))
        }
        // i_size is the kernel's loff_t: beyond Int64.max it is negative there, and here the
        // block arithmetic on it (size + block size - 1) would overflow.
        guard inode.size <= UInt64(Int64.max) else {
            throw EROFSError.corrupt(what: "inode \(nid)", reason: "i_size \(inode.size) exceeds 2^63 - 1")
        }
        guard let type = FileType(mode: inode.mode) else {
            throw EROFSError.corrupt(what: "inode \(nid)", reason: "bogus mode 0o\(String(inode.mode, radix: 8))")
        }
        inode.type = type
        let inodeSize = inode.isExtended ? ExtendedInode.size : CompactInode.size
        try source.checkRange(offset, inode.headSize, what: "inode \(nid) with xattrs")
        inode.xattrs = try readXattrs(nid: nid, at: offset + UInt64(inodeSize), areaSize: inode.headSize - inodeSize)

        switch type {
        case .characterDevice, .blockDevice:
            inode.rdev = union
        case .fifo, .socket:
            break
        case .regular, .directory, .symlink:
            inode.layout = try dataLayout(of: inode, kind: layoutKind, union: union)
        }
        return inode
    }

    /// The root directory's inode.
    public func rootInode() throws -> Inode {
        try inode(nid: rootNid)
    }

    private func xattrAreaSize(_ count: UInt16) -> Int {
        count == 0 ? 0 : XattrBodyHeader.size + 4 * (Int(count) - 1)
    }

    private func dataLayout(of inode: Inode, kind: DataLayoutKind, union: UInt32) throws -> InodeDataLayout {
        let headEnd = inode.offset + UInt64(inode.headSize)
        switch kind {
        case .flatPlain:
            return .flatPlain(startBlock: union)
        case .flatInline:
            return .flatInline(startBlock: union, tailOffset: headEnd)
        case .compressedFull, .compressedCompact:
            return .compressed(kind)
        case .chunkBased:
            let format = UInt16(truncatingIfNeeded: union)
            guard format & ~(Layout.chunkFormatBlockBitsMask | Layout.chunkFormatIndexes) == 0 else {
                throw EROFSError.unsupported(what: "chunk format 0x\(String(format, radix: 16)) of nid \(inode.nid)")
            }
            let log2 = superBlock.blockSizeBits + UInt8(format & Layout.chunkFormatBlockBitsMask)
            let indexed = format & Layout.chunkFormatIndexes != 0
            let unit = UInt64(indexed ? ChunkIndex.size : 4)
            let tableOffset = (headEnd + unit - 1) / unit * unit
            let chunkSize = UInt64(1) << UInt64(log2)
            let count = inode.size / chunkSize + (inode.size % chunkSize == 0 ? 0 : 1)
            guard count <= (source.size - min(tableOffset, source.size)) / unit else {
                throw EROFSError.truncated(what: "chunk table of nid \(inode.nid) (\(count) chunks)",
                                           offset: tableOffset, needed: count * unit,
                                           available: source.size - min(tableOffset, source.size))
            }
            return .chunked(chunkSizeLog2: log2, indexed: indexed, tableOffset: tableOffset, count: Int(count))
        }
    }
}
