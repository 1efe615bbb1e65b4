/// `struct erofs_xattr_ibody_header`, 12 bytes: starts the inline xattr area right after the
/// inode. Followed by `sharedCount` 4-byte shared xattr ids, then inline entries.
public struct XattrBodyHeader: OnDiskStruct {
    public static let size = 12

    /// `h_reserved` in 6.1; newer kernels use it as a name bloom filter only when
    /// `EROFS_FEATURE_COMPAT_XATTR_FILTER` is set, which Ferry never sets.
    public var nameFilter: UInt32 = 0   // 0
    public var sharedCount: UInt8 = 0   // 4
    // 5...11 reserved

    public init(nameFilter: UInt32 = 0, sharedCount: UInt8 = 0) {
        self.nameFilter = nameFilter
        self.sharedCount = sharedCount
    }

    public func encode(into bytes: inout [UInt8], at offset: Int) {
        bytes.storeLE32(nameFilter, at: offset)
        bytes[offset + 4] = sharedCount
        bytes.replaceSubrange(offset + 5..<offset + 12, with: repeatElement(0, count: 7))
    }

    public static func decode(_ bytes: [UInt8], at offset: Int) throws -> XattrBodyHeader {
        try requireBytes(bytes, at: offset, count: size, for: "xattr body header")
        return XattrBodyHeader(nameFilter: bytes.loadLE32(at: offset), sharedCount: bytes[offset + 4])
    }
}

/// `struct erofs_xattr_entry`, 4 bytes, followed by the name suffix and the value; the whole
/// entry is padded to 4 bytes (`EROFS_XATTR_ALIGN`).
public struct XattrEntryHeader: OnDiskStruct {
    public static let size = 4

    /// Length of the name after its prefix.
    public var nameLength: UInt8 = 0    // 0
    /// `EROFS_XATTR_INDEX_*` of the prefix (see `XattrPrefix`).
    public var nameIndex: UInt8 = 0     // 1
    public var valueSize: UInt16 = 0    // 2

    public init(nameLength: UInt8 = 0, nameIndex: UInt8 = 0, valueSize: UInt16 = 0) {
        self.nameLength = nameLength
        self.nameIndex = nameIndex
        self.valueSize = valueSize
    }

    /// The padded size of the entry including name and value.
    public var entrySize: Int { roundUp(Self.size + Int(nameLength) + Int(valueSize), 4) }

    public func encode(into bytes: inout [UInt8], at offset: Int) {
        bytes[offset] = nameLength
        bytes[offset + 1] = nameIndex
        bytes.storeLE16(valueSize, at: offset + 2)
    }

    public static func decode(_ bytes: [UInt8], at offset: Int) throws -> XattrEntryHeader {
        try requireBytes(bytes, at: offset, count: size, for: "xattr entry")
        return XattrEntryHeader(nameLength: bytes[offset], nameIndex: bytes[offset + 1],
                                valueSize: bytes.loadLE16(at: offset + 2))
    }
}

/// The short name prefixes the kernel's `erofs_xattr_handler()` maps from `e_name_index`.
public enum XattrPrefix: UInt8, Sendable, CaseIterable {
    case user = 1
    case posixACLAccess = 2
    case posixACLDefault = 3
    case trusted = 4
    case security = 6

    public var prefix: [UInt8] {
        switch self {
        case .user: return Array("user.".utf8)
        case .posixACLAccess: return Array("system.posix_acl_access".utf8)
        case .posixACLDefault: return Array("system.posix_acl_default".utf8)
        case .trusted: return Array("trusted.".utf8)
        case .security: return Array("security.".utf8)
        }
    }

    /// Splits a full attribute name into its prefix and suffix. The ACL names must match
    /// exactly (their suffix is empty); others need a non-empty suffix.
    static func split(_ name: [UInt8]) -> (XattrPrefix, [UInt8])? {
        for candidate in [XattrPrefix.posixACLAccess, .posixACLDefault] where name == candidate.prefix {
            return (candidate, [])
        }
        for candidate in [XattrPrefix.user, .trusted, .security] {
            let prefix = candidate.prefix
            if name.count > prefix.count, name.starts(with: prefix) {
                return (candidate, Array(name[prefix.count...]))
            }
        }
        return nil
    }
}
