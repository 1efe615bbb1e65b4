/// One 512-byte tar header block, decoded but not yet combined with extension headers.
///
/// Layout (POSIX.1-1988 ustar, pax(1) "ustar Interchange Format"; GNU tar's `struct posix_header`):
/// name 0..<100, mode 100..<108, uid 108..<116, gid 116..<124, size 124..<136, mtime 136..<148,
/// chksum 148..<156, typeflag 156, linkname 157..<257, magic 257..<263, version 263..<265,
/// uname 265..<297, gname 297..<329, devmajor 329..<337, devminor 337..<345, prefix 345..<500.
struct TarHeader {
    static let blockSize = 512

    var name: [UInt8]
    var mode: Int64
    var uid: Int64
    var gid: Int64
    var size: Int64
    var mtime: Int64
    var typeflag: UInt8
    var linkname: [UInt8]
    var devMajor: Int64
    var devMinor: Int64

    /// Why a header block could not be decoded.
    enum Problem: Error {
        case badChecksum(stored: Int64, unsigned: Int64, signed: Int64)
        case badNumber(field: String)
    }

    static func isZeroBlock(_ block: ArraySlice<UInt8>) -> Bool { block.allSatisfy { $0 == 0 } }

    /// Decodes `block` (exactly 512 bytes). The name is only for messages; `Problem` says why a
    /// block is not a header.
    init(block: [UInt8]) throws(Problem) {
        precondition(block.count == Self.blockSize)
        // The checksum is the sum of all header bytes with the chksum field read as spaces.
        // Historic tars summed signed chars, so both sums are accepted (as GNU tar does).
        var unsigned: Int64 = 0
        var signed: Int64 = 0
        for (i, b) in block.enumerated() {
            let v: UInt8 = (148..<156).contains(i) ? 0x20 : b
            unsigned += Int64(v)
            signed += Int64(Int8(bitPattern: v))
        }
        guard let stored = Self.number(block[148..<156]) else { throw .badNumber(field: "chksum") }
        guard stored == unsigned || stored == signed else {
            throw .badChecksum(stored: stored, unsigned: unsigned, signed: signed)
        }

        func field(_ range: Range<Int>, _ label: String) throws(Problem) -> Int64 {
            guard let v = Self.number(block[range]) else { throw .badNumber(field: label) }
            return v
        }
        mode = try field(100..<108, "mode")
        uid = try field(108..<116, "uid")
        gid = try field(116..<124, "gid")
        size = try field(124..<136, "size")
        mtime = try field(136..<148, "mtime")
        typeflag = block[156]
        linkname = Self.string(block[157..<257])
        let magic = Array(block[257..<263])
        let isUstar = magic == Array("ustar\u{0}".utf8)
        let isGNU = magic == Array("ustar ".utf8)
        if isUstar || isGNU {
            devMajor = try field(329..<337, "devmajor")
            devMinor = try field(337..<345, "devminor")
        } else {
            devMajor = 0
            devMinor = 0
        }
        var fullName = Self.string(block[0..<100])
        // Only POSIX ustar has the prefix field; GNU headers keep atime/ctime there.
        if isUstar {
            let prefix = Self.string(block[345..<500])
            if !prefix.isEmpty { fullName = prefix + [UInt8(ascii: "/")] + fullName }
        }
        name = fullName
    }

    /// Bytes up to the first NUL.
    static func string(_ field: ArraySlice<UInt8>) -> [UInt8] {
        Array(field.prefix { $0 != 0 })
    }

    /// A numeric field: octal digits, optionally surrounded by spaces and terminated by NUL or
    /// space; or GNU base-256 (first byte 0x80 for positive, 0xff for negative, big-endian two's
    /// complement in the rest), which tars use for values too large for octal. An all-blank
    /// field is 0. nil when malformed or beyond Int64.
    static func number(_ field: ArraySlice<UInt8>) -> Int64? {
        guard let first = field.first else { return 0 }
        if first & 0x80 != 0 {
            let negative = first == 0xff
            guard first == 0x80 || negative else { return nil }
            var value: Int64 = negative ? -1 : 0
            var started = false
            for byte in field.dropFirst() {
                // Leading sign-extension bytes carry no value; after them, the value must fit.
                if !started {
                    if byte == (negative ? 0xff : 0) { continue }
                    started = true
                }
                guard value >= Int64.min >> 8, value <= Int64.max >> 8 else { return nil }
                value = value << 8 | Int64(byte)
            }
            return value
        }
        var value: Int64 = 0
        var index = field.startIndex
        while index < field.endIndex, field[index] == 0x20 { index += 1 }
        while index < field.endIndex, (0x30...0x37).contains(field[index]) {
            let (m, o1) = value.multipliedReportingOverflow(by: 8)
            let (a, o2) = m.addingReportingOverflow(Int64(field[index] - 0x30))
            guard !o1, !o2 else { return nil }
            value = a
            index += 1
        }
        // What follows the digits must be terminators only.
        while index < field.endIndex {
            guard field[index] == 0 || field[index] == 0x20 else { return nil }
            index += 1
        }
        return value
    }
}
