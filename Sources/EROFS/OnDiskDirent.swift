/// `struct erofs_dirent`, 12 bytes. A directory block holds N dirents followed by their N
/// names (not NUL-terminated; a name ends where the next begins, at the end of the block's
/// used bytes, or at the first NUL). `nameOffset` of the first dirent is therefore `12 * N`.
public struct Dirent: OnDiskStruct {
    public static let size = 12

    public var nid: UInt64 = 0          // 0
    /// Offset of the name from the start of the directory block.
    public var nameOffset: UInt16 = 0   // 8
    /// `FT_*` value (see `FileType`), 0 for unknown.
    public var fileType: UInt8 = 0      // 10
    // 11 reserved

    public init(nid: UInt64 = 0, nameOffset: UInt16 = 0, fileType: UInt8 = 0) {
        self.nid = nid
        self.nameOffset = nameOffset
        self.fileType = fileType
    }

    public func encode(into bytes: inout [UInt8], at offset: Int) {
        bytes.storeLE64(nid, at: offset)
        bytes.storeLE16(nameOffset, at: offset + 8)
        bytes[offset + 10] = fileType
        bytes[offset + 11] = 0
    }

    public static func decode(_ bytes: [UInt8], at offset: Int) throws -> Dirent {
        try requireBytes(bytes, at: offset, count: size, for: "dirent")
        return Dirent(nid: bytes.loadLE64(at: offset), nameOffset: bytes.loadLE16(at: offset + 8),
                      fileType: bytes[offset + 10])
    }
}
