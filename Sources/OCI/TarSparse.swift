/// A sparse file's map: which ranges of the file are stored in the archive (in order); the
/// rest reads as zeros. Sources: GNU tar's manual, "Storing Sparse Files" and appendix
/// "Sparse Formats" (old GNU 'S' headers; PAX 0.0, 0.1 and 1.0), which Go's archive/tar (the
/// reader containerd and umoci use) also implements.
struct SparseMap: Sendable, Equatable {
    struct Segment: Sendable, Equatable {
        var offset: Int64
        var length: Int64
    }

    var segments: [Segment]
    /// The file's size once its holes are filled.
    var realSize: Int64

    /// Bytes stored in the archive.
    var storedSize: Int64 { segments.reduce(0) { $0 + $1.length } }

    /// Why the map cannot describe a file (nil when it can): segments must lie inside the file,
    /// in ascending order, without overlap (as Go's `validateSparseEntries` requires).
    var problem: String? {
        guard realSize >= 0 else { return "negative real size \(realSize)" }
        var end: Int64 = 0
        for s in segments {
            guard s.offset >= 0, s.length >= 0, s.offset <= Int64.max - s.length else {
                return "segment \(s.offset)+\(s.length) is out of range"
            }
            guard s.offset >= end else { return "segment at \(s.offset) overlaps or precedes the one before" }
            guard s.offset + s.length <= realSize else { return "segment \(s.offset)+\(s.length) lies beyond the size \(realSize)" }
            end = s.offset + s.length
        }
        return nil
    }

    // MARK: - Old GNU format (typeflag 'S')

    /// The map in an old GNU header: four (offset, numbytes) pairs of 12-byte numbers at 386,
    /// `isextended` at 482, `realsize` at 483 (GNU tar's `struct oldgnu_header`). Returns the
    /// map so far and whether extension blocks follow.
    static func oldGNUHeader(_ block: [UInt8]) -> (segments: [Segment], realSize: Int64, extended: Bool)? {
        guard let pairs = pairs(block, at: 386, count: 4), let realSize = TarHeader.number(block[483..<495]) else { return nil }
        return (pairs, realSize, block[482] != 0)
    }

    /// An old GNU sparse extension block: 21 pairs at 0, `isextended` at 504
    /// (`struct sparse_header`).
    static func oldGNUExtension(_ block: [UInt8]) -> (segments: [Segment], extended: Bool)? {
        guard let pairs = pairs(block, at: 0, count: 21) else { return nil }
        return (pairs, block[504] != 0)
    }

    /// Pairs of 12-byte numeric fields; an all-zero pair ends the list.
    private static func pairs(_ block: [UInt8], at start: Int, count: Int) -> [Segment]? {
        var out: [Segment] = []
        for i in 0..<count {
            let base = start + i * 24
            let offsetField = block[base..<(base + 12)], lengthField = block[(base + 12)..<(base + 24)]
            if offsetField.allSatisfy({ $0 == 0 }) && lengthField.allSatisfy({ $0 == 0 }) { break }
            guard let offset = TarHeader.number(offsetField), let length = TarHeader.number(lengthField) else { return nil }
            out.append(Segment(offset: offset, length: length))
        }
        return out
    }

    // MARK: - PAX formats

    /// Which PAX sparse format the records use.
    enum PAXFormat: Equatable {
        /// 0.0 (`GNU.sparse.offset`/`numbytes` records) or 0.1 (`GNU.sparse.map`): the map is
        /// in the records.
        case inRecords(SparseMap)
        /// 1.0: the map is at the start of the data; `realSize` from `GNU.sparse.realsize`.
        case inData(realSize: Int64)
    }

    /// The sparse format the records describe, nil for a file that is not sparse; a message
    /// for malformed records.
    static func pax(_ records: [(key: [UInt8], value: [UInt8])]) -> Result<PAXFormat?, SparseProblem> {
        func text(_ v: [UInt8]) -> String { String(decoding: v, as: UTF8.self) }
        func number(_ v: [UInt8]) -> Int64? { Int64(text(v)).flatMap { $0 >= 0 ? $0 : nil } }
        var major: String?, minor: String?, size: Int64?, realSize: Int64?, map: [Int64]?
        var offsets: [Int64] = [], lengths: [Int64] = []
        for (key, value) in records where key.starts(with: Array("GNU.sparse.".utf8)) {
            let name = text(Array(key.dropFirst(11)))
            switch name {
            case "major": major = text(value)
            case "minor": minor = text(value)
            case "size", "realsize":
                guard let n = number(value) else { return .failure(SparseProblem("GNU.sparse.\(name)=\(text(value)) is not a size")) }
                if name == "size" { size = n } else { realSize = n }
            case "offset", "numbytes":
                guard let n = number(value) else { return .failure(SparseProblem("GNU.sparse.\(name)=\(text(value)) is not a number")) }
                if name == "offset" { offsets.append(n) } else { lengths.append(n) }
            case "map":
                let parts = value.isEmpty ? [] : value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
                let numbers = parts.compactMap { number(Array($0)) }
                guard numbers.count == parts.count, numbers.count % 2 == 0 else {
                    return .failure(SparseProblem("GNU.sparse.map is not a list of offset,length pairs"))
                }
                map = numbers
            default:
                break  // GNU.sparse.name is a path record, handled by the caller.
            }
        }
        let real = size ?? realSize
        if major == "1" {
            guard minor == "0", let real else { return .failure(SparseProblem("unsupported sparse format \(major ?? "?").\(minor ?? "?") or no real size")) }
            return .success(.inData(realSize: real))
        }
        if let map {
            guard let real else { return .failure(SparseProblem("GNU.sparse.map without GNU.sparse.size")) }
            let segments = stride(from: 0, to: map.count, by: 2).map { Segment(offset: map[$0], length: map[$0 + 1]) }
            return .success(.inRecords(SparseMap(segments: segments, realSize: real)))
        }
        if !offsets.isEmpty || !lengths.isEmpty {
            guard offsets.count == lengths.count, let real else {
                return .failure(SparseProblem("GNU.sparse.offset and GNU.sparse.numbytes do not pair up, or no GNU.sparse.size"))
            }
            return .success(.inRecords(SparseMap(segments: zip(offsets, lengths).map { Segment(offset: $0, length: $1) }, realSize: real)))
        }
        if major != nil || minor != nil { return .failure(SparseProblem("GNU.sparse.major/minor without a 1.0 map")) }
        return .success(nil)
    }

    /// Parses the 1.0 map at the start of the data: newline-terminated decimals, the count of
    /// pairs first, then offset and length of each. Returns nil while more bytes are needed.
    static func dataMap(_ bytes: [UInt8], realSize: Int64) -> Result<(SparseMap, consumed: Int)?, SparseProblem> {
        var numbers: [Int64] = []
        var start = 0
        var expected: Int?
        for (i, b) in bytes.enumerated() where b == 0x0a {
            guard let n = Int64(String(decoding: bytes[start..<i], as: UTF8.self)), n >= 0 else {
                return .failure(SparseProblem("sparse map in the data is not a list of numbers"))
            }
            start = i + 1
            if expected == nil {
                guard n <= 1 << 20 else { return .failure(SparseProblem("sparse map of \(n) segments is too large")) }
                expected = Int(n) * 2
            } else {
                numbers.append(n)
            }
            if let expected, numbers.count == expected {
                let segments = stride(from: 0, to: numbers.count, by: 2).map { Segment(offset: numbers[$0], length: numbers[$0 + 1]) }
                return .success((SparseMap(segments: segments, realSize: realSize), start))
            }
        }
        return .success(nil)
    }
}

/// Why a sparse map was rejected.
struct SparseProblem: Error {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}

/// Where a reader is in a sparse entry: the logical offset in the expanded file and the segment
/// that covers or follows it.
struct SparseCursor {
    var map: SparseMap
    var logical: Int64 = 0
    var segment = 0

    /// What the next `count` logical bytes start with: stored data (to read from the archive)
    /// or a hole (zeros), and how many bytes of it; nil at the end of the file.
    mutating func next(upTo count: Int) -> (stored: Bool, length: Int)? {
        guard logical < map.realSize, count > 0 else { return nil }
        while segment < map.segments.count, map.segments[segment].offset + map.segments[segment].length <= logical { segment += 1 }
        if segment < map.segments.count, map.segments[segment].offset <= logical {
            let end = map.segments[segment].offset + map.segments[segment].length
            return (true, Int(min(Int64(count), end - logical)))
        }
        let end = segment < map.segments.count ? map.segments[segment].offset : map.realSize
        return (false, Int(min(Int64(count), end - logical)))
    }
}
