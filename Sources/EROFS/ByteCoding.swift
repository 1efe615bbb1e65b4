/// Explicit little-endian stores and loads at byte offsets. Every on-disk struct goes through
/// these; nothing is ever memory-dumped.
extension Array where Element == UInt8 {
    @inline(__always) mutating func storeLE16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value)
        self[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
    }

    @inline(__always) mutating func storeLE32(_ value: UInt32, at offset: Int) {
        for i in 0..<4 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }

    @inline(__always) mutating func storeLE64(_ value: UInt64, at offset: Int) {
        for i in 0..<8 { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    @inline(__always) mutating func storeBytes(_ bytes: [UInt8], at offset: Int) {
        replaceSubrange(offset..<offset + bytes.count, with: bytes)
    }

    @inline(__always) func loadLE16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) | UInt16(self[offset + 1]) << 8
    }

    @inline(__always) func loadLE32(at offset: Int) -> UInt32 {
        var value: UInt32 = 0
        for i in (0..<4).reversed() { value = value << 8 | UInt32(self[offset + i]) }
        return value
    }

    @inline(__always) func loadLE64(at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in (0..<8).reversed() { value = value << 8 | UInt64(self[offset + i]) }
        return value
    }
}

/// Checks that `count` bytes at `offset` lie inside `bytes` before a struct is decoded.
func requireBytes(_ bytes: [UInt8], at offset: Int, count: Int, for what: String) throws {
    guard offset >= 0, offset <= bytes.count, bytes.count - offset >= count else {
        throw EROFSError.truncated(what: what, offset: UInt64(max(offset, 0)), needed: UInt64(count),
                                   available: UInt64(max(bytes.count - max(offset, 0), 0)))
    }
}

/// Rounds `value` up to a multiple of `alignment` (a power of two).
@inline(__always) func roundUp(_ value: Int, _ alignment: Int) -> Int {
    (value + alignment - 1) & ~(alignment - 1)
}
