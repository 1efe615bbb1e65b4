/// Appends little-endian integers and raw bytes to a growing buffer (Ferry's own on-disk records:
/// chunk tables, the in-flight journal).
public struct LittleEndianWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { for i in 0..<2 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
    public mutating func zeros(_ n: Int) { bytes.append(contentsOf: repeatElement(0, count: n)) }
}

/// Reads little-endian integers from a byte buffer with bounds checks; running past the end
/// throws instead of trapping, so malformed input can never crash the reader.
public struct LittleEndianReader {
    public let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public struct OutOfBounds: Error {}

    public mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, offset <= bytes.count - n else { throw OutOfBounds() }
        defer { offset += n }
        return bytes[offset ..< offset + n]
    }

    public mutating func u8() throws -> UInt8 { try take(1).first ?? 0 }
    public mutating func u16() throws -> UInt16 { UInt16(truncatingIfNeeded: try uint(2)) }
    public mutating func u32() throws -> UInt32 { UInt32(truncatingIfNeeded: try uint(4)) }
    public mutating func u64() throws -> UInt64 { try uint(8) }
    public mutating func raw(_ n: Int) throws -> [UInt8] { Array(try take(n)) }

    private mutating func uint(_ n: Int) throws -> UInt64 {
        var v: UInt64 = 0
        for (i, b) in try take(n).enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        return v
    }
}
