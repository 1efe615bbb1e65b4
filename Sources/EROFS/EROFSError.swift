/// Everything that can go wrong while laying out or reading an EROFS image.
///
/// Writer cases name the offending node (its index in `ImageTree.nodes`); reader cases name
/// the on-disk object (nid, byte offset) so a corrupt image can be located with `xxd`.
public enum EROFSError: Error, Sendable, Equatable, CustomStringConvertible {
    // MARK: Writer input
    /// The tree given to `ImageWriter` breaks a rule of the model or of the format.
    case invalidTree(node: Int, reason: String)
    /// An extended attribute name has no prefix EROFS can index (`user.`, `trusted.`,
    /// `security.`, `system.posix_acl_access`, `system.posix_acl_default`).
    case unknownXattrPrefix(node: Int, name: [UInt8])
    /// The image would exceed a limit of the on-disk format (e.g. 2^32 blocks).
    case tooLarge(what: String, limit: UInt64)

    // MARK: Reader
    /// A read ran past the end of the image or of a structure.
    case truncated(what: String, offset: UInt64, needed: UInt64, available: UInt64)
    /// No EROFS superblock magic at byte 1024.
    case badMagic(found: UInt32)
    /// The superblock's crc32c does not match its contents.
    case badChecksum(stored: UInt32, computed: UInt32)
    /// The image uses a feature or a parameter this reader does not implement.
    case unsupported(what: String)
    /// A structure holds a value the format forbids.
    case corrupt(what: String, reason: String)
    /// A nid points outside the metadata area.
    case nidOutOfRange(nid: UInt64, imageSize: UInt64)
    /// A path component does not exist.
    case notFound(path: String)
    /// A path component (or the inode asked for) is not a directory.
    case notADirectory(path: String)
    /// The image file could not be opened or read.
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidTree(node, reason):
            return "invalid image tree at node \(node): \(reason)"
        case let .unknownXattrPrefix(node, name):
            return "node \(node): extended attribute '\(printable(name))' has no EROFS name prefix "
                + "(use user., trusted., security., system.posix_acl_access or system.posix_acl_default)"
        case let .tooLarge(what, limit):
            return "\(what) exceeds the EROFS limit of \(limit)"
        case let .truncated(what, offset, needed, available):
            return "truncated image: \(what) needs \(needed) bytes at offset \(offset), only \(available) available"
        case let .badMagic(found):
            return "not an EROFS image: magic at byte 1024 is 0x\(String(found, radix: 16)), expected 0xe0f5e1e2"
        case let .badChecksum(stored, computed):
            return "superblock checksum mismatch: stored 0x\(String(stored, radix: 16)), "
                + "computed 0x\(String(computed, radix: 16)); the image is damaged"
        case let .unsupported(what):
            return "unsupported EROFS feature: \(what)"
        case let .corrupt(what, reason):
            return "corrupt EROFS image: \(what): \(reason)"
        case let .nidOutOfRange(nid, imageSize):
            return "corrupt EROFS image: nid \(nid) lies outside the \(imageSize)-byte image"
        case let .notFound(path):
            return "no such file or directory in the image: \(path)"
        case let .notADirectory(path):
            return "not a directory in the image: \(path)"
        case let .io(path, reason):
            return "cannot read \(path): \(reason)"
        }
    }
}

/// Renders raw name bytes for messages: UTF-8 where valid, `\xNN` escapes elsewhere.
func printable(_ bytes: [UInt8]) -> String {
    if let text = String(validating: bytes, as: UTF8.self), !text.contains("\0") {
        return text
    }
    return bytes.map { $0 >= 0x20 && $0 < 0x7F ? String(UnicodeScalar($0)) : "\\x" + hex2($0) }.joined()
}

func hex2(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
}
