/// A fixed-size EROFS on-disk structure with explicit little-endian encoding.
///
/// `decode` reads only the named fields; reserved bytes are ignored on decode and written as
/// zero on encode, so `decode(encode(x)) == x` for every value.
public protocol OnDiskStruct: Sendable, Hashable {
    /// The structure's size in bytes, as checked by `erofs_check_ondisk_layout_definitions`.
    static var size: Int { get }
    /// Writes the structure into `bytes[offset ..< offset + size]` (which must exist).
    func encode(into bytes: inout [UInt8], at offset: Int)
    /// Reads the structure at `offset`, throwing `EROFSError.truncated` if it does not fit.
    static func decode(_ bytes: [UInt8], at offset: Int) throws -> Self
}

extension OnDiskStruct {
    /// The structure as a fresh `size`-byte array.
    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        encode(into: &bytes, at: 0)
        return bytes
    }
}
