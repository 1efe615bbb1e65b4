/// Constants of the EROFS on-disk format, named as in the kernel's `fs/erofs/erofs_fs.h`.
public enum Layout {
    /// `EROFS_SUPER_MAGIC_V1`.
    public static let magic: UInt32 = 0xE0F5_E1E2
    /// `EROFS_SUPER_OFFSET`: the superblock starts 1 KiB into block 0 (room for boot sectors).
    public static let superBlockOffset = 1024
    /// The only block size the writer emits (`blkszbits` 12); the reader accepts 512...4096.
    public static let blockSize = 4096
    public static let blockSizeBits: UInt8 = 12
    /// Inodes are addressed in 32-byte slots: byte = meta_blkaddr * blocksize + nid * 32.
    public static let inodeSlotSize = 32
    /// `EROFS_NAME_LEN`.
    public static let maxNameLength = 255
    /// `EROFS_NULL_ADDR`: a hole chunk, or "no block" in `raw_blkaddr`.
    public static let nullAddress: UInt32 = 0xFFFF_FFFF

    /// `EROFS_FEATURE_COMPAT_SB_CHKSUM`: crc32c of the superblock block (Linux 5.5).
    public static let featureCompatSuperBlockChecksum: UInt32 = 0x1
    /// `EROFS_FEATURE_COMPAT_MTIME`: extended inodes carry the mtime (not ctime).
    public static let featureCompatMTime: UInt32 = 0x2
    /// `EROFS_FEATURE_INCOMPAT_CHUNKED_FILE` (Linux 5.15).
    public static let featureIncompatChunkedFile: UInt32 = 0x4
    /// `EROFS_FEATURE_INCOMPAT_DEVICE_TABLE` (Linux 5.16).
    public static let featureIncompatDeviceTable: UInt32 = 0x8
    /// Incompatible features this reader understands: zero padding (only meaningful for
    /// compressed data), chunked files, device table. Anything else is refused.
    static let readerIncompatFeatures: UInt32 = 0x1 | 0x2 | 0x4 | 0x8

    /// `EROFS_CHUNK_FORMAT_BLKBITS_MASK` and `EROFS_CHUNK_FORMAT_INDEXES`.
    public static let chunkFormatBlockBitsMask: UInt16 = 0x001F
    public static let chunkFormatIndexes: UInt16 = 0x0020
}

/// `i_format` bits 1...3 (`EROFS_INODE_*`).
public enum DataLayoutKind: UInt8, Sendable {
    case flatPlain = 0
    case compressedFull = 1
    case flatInline = 2
    case compressedCompact = 3
    case chunkBased = 4
}

/// The file type of an inode: `S_IFMT` bits of `i_mode` and the dirent `file_type` (`FT_*`).
public enum FileType: UInt8, Sendable, Hashable, CaseIterable {
    case regular = 1
    case directory = 2
    case characterDevice = 3
    case blockDevice = 4
    case fifo = 5
    case socket = 6
    case symlink = 7

    /// The `S_IFMT` bits of `st_mode` for this type.
    public var modeBits: UInt16 {
        switch self {
        case .regular: return 0o100000
        case .directory: return 0o040000
        case .characterDevice: return 0o020000
        case .blockDevice: return 0o060000
        case .fifo: return 0o010000
        case .socket: return 0o140000
        case .symlink: return 0o120000
        }
    }

    /// The type named by the `S_IFMT` bits of `mode`, or nil for a bogus mode.
    public init?(mode: UInt16) {
        guard let type = FileType.allCases.first(where: { $0.modeBits == mode & 0o170000 }) else {
            return nil
        }
        self = type
    }

    /// The type of a model node.
    init(_ content: NodeContent) {
        switch content {
        case .directory: self = .directory
        case .regular: self = .regular
        case .symlink: self = .symlink
        case .characterDevice: self = .characterDevice
        case .blockDevice: self = .blockDevice
        case .fifo: self = .fifo
        case .socket: self = .socket
        }
    }
}
