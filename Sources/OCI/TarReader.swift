/// Reads a tar stream entry by entry, in bounded memory, whatever the size of the files in it.
///
/// ```swift
/// let tar = TarReader(source: layerStream, layer: "sha256:…")
/// while let entry = try tar.next() {
///     while let piece = try tar.readData(upTo: 1 << 20) { … }   // optional
/// }
/// ```
/// Understands ustar, GNU (long names 'L', long links 'K', base-256 numbers, sparse 'S') and
/// PAX ('x', 'g') headers, including GNU's PAX sparse formats 0.0, 0.1 and 1.0: a sparse file's
/// `size` is its real size and `readData` returns zeros for its holes. At the end of the
/// archive the rest of the source is read and discarded, so that a `VerifyingSource` underneath
/// checks the blob's digest before `next()` returns nil.
public final class TarReader {
    /// Names the layer in errors.
    public let layer: String
    private let source: any ByteSource
    /// Bytes read from `source` but not consumed yet.
    private var pending: ArraySlice<UInt8> = []
    /// Bytes of the stream consumed so far.
    private var position: Int64 = 0
    private var dataRemaining: Int64 = 0
    private var paddingRemaining: Int64 = 0
    private var current: TarEntry?
    /// Set while the current entry is a sparse file.
    private var sparse: SparseCursor?
    private var globalRecords: [(key: [UInt8], value: [UInt8])] = []
    private var ended = false

    /// Largest PAX or GNU long-name payload accepted (real ones are a few KiB).
    static let metadataLimit: Int64 = 16 << 20

    /// Offset in the (uncompressed) stream of the current entry's data; lets a caller read a
    /// member of an uncompressed tarball in place later (not a sparse one: see `isSparse`).
    public private(set) var dataOffset: Int64 = 0

    /// Whether the current entry is a sparse file (its data is not stored contiguously).
    public var isSparse: Bool { sparse != nil }

    public init(source: any ByteSource, layer: String) {
        self.source = source
        self.layer = layer
    }

    /// Moves to the next entry, skipping what is left of the current one's data. nil at the end
    /// of the archive (two zero blocks, or the end of the stream at a block boundary).
    public func next() throws -> TarEntry? {
        guard !ended else { return nil }
        try skipRestOfEntry()
        current = nil
        sparse = nil
        var local: [(key: [UInt8], value: [UInt8])] = []
        var longName: [UInt8]?
        var longLink: [UInt8]?
        while true {
            let context = longName.map { String(decoding: $0, as: UTF8.self) }
            guard let block = try readBlock(entry: context) else { return try finish() }
            if TarHeader.isZeroBlock(block[...]) {
                // One zero block must be followed by another, or by the end of the stream.
                guard let second = try readBlock(entry: context), !TarHeader.isZeroBlock(second[...]) else { return try finish() }
                throw OCIError.malformedTar(layer: layer, entry: context, reason: "a zero block is followed by data at offset \(position - 512)")
            }
            let header: TarHeader
            do { header = try TarHeader(block: block) } catch {
                let name = String(decoding: TarHeader.string(block[0..<100]), as: UTF8.self)
                switch error {
                case let .badChecksum(stored, unsigned, _):
                    throw OCIError.malformedTar(layer: layer, entry: name, reason: "header checksum \(stored) does not match the header (\(unsigned)) at offset \(position - 512)")
                case let .badNumber(field):
                    throw OCIError.malformedTar(layer: layer, entry: name, reason: "header field \(field) is not a number")
                }
            }
            let headerName = String(decoding: longName ?? header.name, as: UTF8.self)
            guard header.size >= 0 else { throw OCIError.malformedTar(layer: layer, entry: headerName, reason: "negative size") }
            // Base-256 sizes reach Int64.max; rounding one up to the next block must not overflow.
            guard header.size <= Int64.max - 2 * Int64(TarHeader.blockSize) else {
                throw OCIError.malformedTar(layer: layer, entry: headerName, reason: "size \(header.size) is out of range")
            }
            switch header.typeflag {
            case UInt8(ascii: "x"):
                local += try parsePAX(try readMetadata(size: header.size, entry: headerName), entry: headerName)
            case UInt8(ascii: "g"):
                for record in try parsePAX(try readMetadata(size: header.size, entry: headerName), entry: headerName) {
                    globalRecords.removeAll { $0.key == record.key }
                    if !record.value.isEmpty { globalRecords.append(record) }
                }
            case UInt8(ascii: "L"):
                longName = TarHeader.string(try readMetadata(size: header.size, entry: headerName)[...])
            case UInt8(ascii: "K"):
                longLink = TarHeader.string(try readMetadata(size: header.size, entry: headerName)[...])
            case UInt8(ascii: "V"):
                // A GNU volume label names the archive, not a file.
                try skip(Self.padded(header.size), entry: headerName)
            case UInt8(ascii: "S"):
                let map = try oldGNUSparseMap(block, entry: headerName)
                return try makeEntry(header, records: globalRecords + local, longName: longName, longLink: longLink, oldGNUSparse: map)
            default:
                return try makeEntry(header, records: globalRecords + local, longName: longName, longLink: longLink)
            }
        }
    }

    /// The next piece of the current entry's data (at most `count` bytes), or nil when it has
    /// all been read. The slice is only valid until the next call on this reader.
    public func readData(upTo count: Int) throws -> ArraySlice<UInt8>? {
        guard var cursor = sparse else { return try readStored(upTo: count) }
        guard let (stored, length) = cursor.next(upTo: count) else { return nil }
        let piece: ArraySlice<UInt8>
        if stored {
            guard let got = try readStored(upTo: length) else {
                throw OCIError.malformedTar(layer: layer, entry: current?.displayPath, reason: "sparse file's data ends early")
            }
            piece = got
        } else {
            piece = ArraySlice(repeating: 0, count: length)
        }
        cursor.logical += Int64(piece.count)
        sparse = cursor
        return piece
    }

    /// The next piece of the data as stored in the archive.
    private func readStored(upTo count: Int) throws -> ArraySlice<UInt8>? {
        guard dataRemaining > 0, count > 0 else { return nil }
        let want = Int(min(Int64(count), dataRemaining))
        let piece: ArraySlice<UInt8>
        if !pending.isEmpty {
            piece = pending.prefix(want)
            pending = pending.dropFirst(piece.count)
        } else {
            guard let got = try source.read(upTo: want) else {
                throw OCIError.malformedTar(layer: layer, entry: current?.displayPath,
                                            reason: "archive ends in the middle of the entry's data (\(dataRemaining) bytes missing)")
            }
            piece = got
        }
        dataRemaining -= Int64(piece.count)
        position += Int64(piece.count)
        return piece
    }

    // MARK: - Entries

    private func makeEntry(_ header: TarHeader, records: [(key: [UInt8], value: [UInt8])],
                           longName: [UInt8]?, longLink: [UInt8]?, oldGNUSparse: SparseMap? = nil) throws -> TarEntry {
        var rawName = longName ?? header.name
        var rawLink = longLink ?? header.linkname
        var size = header.size
        var uid = header.uid
        var gid = header.gid
        var mtime = header.mtime
        var nanoseconds: UInt32 = 0
        var xattrs: [ExtendedAttribute] = []
        var entryName: String { String(decoding: rawName, as: UTF8.self) }

        func addXattr(_ xattr: ExtendedAttribute) {
            if let i = xattrs.firstIndex(where: { $0.name == xattr.name }) { xattrs[i] = xattr } else { xattrs.append(xattr) }
        }
        // The path record comes first so that errors about the others name the real entry.
        for record in records where record.key == Array("path".utf8) { rawName = record.value }
        // PAX sparse 1.0 stores the real name here (the ustar name is "GNUSparseFile.<pid>/…").
        for record in records where record.key == Array("GNU.sparse.name".utf8) { rawName = record.value }
        for (key, value) in records {
            let text = String(decoding: value, as: UTF8.self)
            func decimal() throws -> Int64 {
                guard let v = Int64(text), v >= 0 else {
                    throw OCIError.malformedTar(layer: layer, entry: entryName, reason: "PAX record \(String(decoding: key, as: UTF8.self))=\(text) is not a number")
                }
                return v
            }
            switch key {
            case Array("linkpath".utf8): rawLink = value
            case Array("size".utf8): size = try decimal()
            case Array("uid".utf8): uid = try decimal()
            case Array("gid".utf8): gid = try decimal()
            case Array("mtime".utf8):
                guard let t = PAXTime(text) else {
                    throw OCIError.malformedTar(layer: layer, entry: entryName, reason: "PAX mtime \"\(text)\" is not a time")
                }
                mtime = t.seconds
                nanoseconds = t.nanoseconds
            default:
                if key.starts(with: Array("SCHILY.xattr.".utf8)) {
                    addXattr(ExtendedAttribute(name: Array(key.dropFirst(13)), value: value))
                } else if key.starts(with: Array("LIBARCHIVE.xattr.".utf8)) {
                    // libarchive URL-encodes the name and base64-encodes the value.
                    guard let name = XattrEncoding.urlDecode(key.dropFirst(17)), let decoded = XattrEncoding.base64Decode(value) else {
                        throw OCIError.malformedTar(layer: layer, entry: entryName, reason: "malformed record \(String(decoding: key, as: UTF8.self))")
                    }
                    addXattr(ExtendedAttribute(name: name, value: decoded))
                }
                // Other records (atime, ctime, uname, gname, comment, charset, vendor keys) do not
                // change what the layer contains.
            }
        }
        // Leaves room for the block padding arithmetic.
        guard size <= Int64.max - 2 * Int64(TarHeader.blockSize) else {
            throw OCIError.malformedTar(layer: layer, entry: entryName, reason: "size \(size) is out of range")
        }
        guard uid <= Int64(UInt32.max), gid <= Int64(UInt32.max), uid >= 0, gid >= 0 else {
            throw OCIError.malformedTar(layer: layer, entry: entryName, reason: "uid \(uid) or gid \(gid) out of range")
        }
        guard header.devMajor >= 0, header.devMajor <= Int64(UInt32.max), header.devMinor >= 0, header.devMinor <= Int64(UInt32.max) else {
            throw OCIError.malformedTar(layer: layer, entry: entryName, reason: "device number out of range")
        }
        let kind: TarEntry.Kind
        switch header.typeflag {
        case UInt8(ascii: "0"), UInt8(ascii: "7"), UInt8(ascii: "S"): kind = .regular
        // Pre-POSIX tars mark directories only with a trailing slash.
        case 0: kind = rawName.last == UInt8(ascii: "/") ? .directory : .regular
        case UInt8(ascii: "1"): kind = .hardlink
        case UInt8(ascii: "2"): kind = .symlink
        case UInt8(ascii: "3"): kind = .characterDevice
        case UInt8(ascii: "4"): kind = .blockDevice
        case UInt8(ascii: "5"): kind = .directory
        case UInt8(ascii: "6"): kind = .fifo
        default:
            let flag = header.typeflag
            let shown = (0x20..<0x7f).contains(flag) ? "'\(Character(Unicode.Scalar(flag)))'" : "0x\(String(flag, radix: 16))"
            throw OCIError.unsupportedTarEntry(layer: layer, entry: entryName, reason: "unknown entry type \(shown)")
        }
        let path = try TarPath.normalize(rawName, layer: layer)
        var entry = TarEntry(kind: kind, path: path, mode: UInt32(header.mode & 0o7777), uid: UInt32(uid), gid: UInt32(gid),
                             mtimeSeconds: mtime, mtimeNanoseconds: nanoseconds, size: kind == .regular ? size : 0,
                             xattrs: xattrs)
        switch kind {
        case .hardlink:
            guard !rawLink.isEmpty else { throw OCIError.malformedTar(layer: layer, entry: entryName, reason: "hard link without a target") }
            do { entry.hardlinkTarget = try TarPath.normalize(rawLink, layer: layer) } catch let OCIError.unsafePath(_, target, reason) {
                throw OCIError.unsafePath(layer: layer, entry: entryName, reason: "hard link target \"\(target)\": \(reason)")
            }
        case .symlink:
            entry.symlinkTarget = rawLink
        case .characterDevice, .blockDevice:
            entry.deviceMajor = UInt32(header.devMajor)
            entry.deviceMinor = UInt32(header.devMinor)
        default:
            break
        }
        current = entry
        dataOffset = position
        // Only regular files have content, but whatever the header declares must be skipped.
        dataRemaining = size
        paddingRemaining = Self.padded(size) - size
        if kind == .regular, let map = try sparseMap(records: records, oldGNU: oldGNUSparse, entry: entryName) {
            sparse = SparseCursor(map: map)
            entry.size = map.realSize
            current = entry
        }
        return entry
    }

    // MARK: - Sparse files

    /// The old GNU header's map plus its extension blocks, which follow the header.
    private func oldGNUSparseMap(_ block: [UInt8], entry: String) throws -> SparseMap {
        guard let head = SparseMap.oldGNUHeader(block) else {
            throw OCIError.malformedTar(layer: layer, entry: entry, reason: "malformed GNU sparse header")
        }
        var segments = head.segments
        var extended = head.extended
        while extended {
            guard let next = try readBlock(entry: entry), let ext = SparseMap.oldGNUExtension(next),
                  segments.count + ext.segments.count <= 1 << 20 else {
                throw OCIError.malformedTar(layer: layer, entry: entry, reason: "malformed GNU sparse extension header")
            }
            segments += ext.segments
            extended = ext.extended
        }
        return SparseMap(segments: segments, realSize: head.realSize)
    }

    /// The current entry's sparse map (nil for an ordinary file), checked against the stored
    /// data. A 1.0 map is read from the start of the data, which it leaves behind.
    private func sparseMap(records: [(key: [UInt8], value: [UInt8])], oldGNU: SparseMap?, entry: String) throws -> SparseMap? {
        var map = oldGNU
        switch SparseMap.pax(records) {
        case let .failure(problem):
            throw OCIError.malformedTar(layer: layer, entry: entry, reason: problem.reason)
        case .success(.none):
            break
        case let .success(.some(.inRecords(found))):
            map = found
        case let .success(.some(.inData(realSize))):
            // Newline-terminated decimals padded to a whole block: read block by block, never
            // past a block boundary (the file's data follows), counting lines as they come so
            // the map is parsed once.
            let block = TarHeader.blockSize
            var bytes: [UInt8] = []
            var lines = 0
            var needed: Int?
            while true {
                guard bytes.count < (1 << 24), let piece = try readStored(upTo: block - bytes.count % block) else {
                    throw OCIError.malformedTar(layer: layer, entry: entry, reason: "sparse map at the start of the data is missing or too long")
                }
                lines += piece.reduce(0) { $0 + ($1 == 0x0a ? 1 : 0) }
                bytes += piece
                if needed == nil, let newline = bytes.firstIndex(of: 0x0a) {
                    guard let count = Int(String(decoding: bytes[..<newline], as: UTF8.self)), count >= 0, count <= 1 << 20 else {
                        throw OCIError.malformedTar(layer: layer, entry: entry, reason: "sparse map in the data does not start with a segment count")
                    }
                    needed = 1 + 2 * count
                }
                guard let needed, lines >= needed, bytes.count % block == 0 else { continue }
                switch SparseMap.dataMap(bytes, realSize: realSize) {
                case let .success(found?): map = found.0
                case let .failure(problem): throw OCIError.malformedTar(layer: layer, entry: entry, reason: problem.reason)
                case .success(nil): throw OCIError.malformedTar(layer: layer, entry: entry, reason: "sparse map in the data is incomplete")
                }
                break
            }
        }
        guard let map else { return nil }
        if let problem = map.problem {
            throw OCIError.malformedTar(layer: layer, entry: entry, reason: "sparse map: \(problem)")
        }
        guard map.storedSize == dataRemaining else {
            throw OCIError.malformedTar(layer: layer, entry: entry, reason: "sparse map stores \(map.storedSize) bytes but the entry has \(dataRemaining)")
        }
        return map
    }

    // MARK: - Stream helpers

    private func finish() throws -> TarEntry? {
        ended = true
        pending = []
        try source.drain()
        return nil
    }

    private func skipRestOfEntry() throws {
        let name = current?.displayPath
        if dataRemaining > 0 {
            try skip(dataRemaining, entry: name, what: "the entry's data")
            dataRemaining = 0
        }
        if paddingRemaining > 0 {
            try skip(paddingRemaining, entry: name, what: "the padding after the entry's data")
            paddingRemaining = 0
        }
    }

    static func padded(_ size: Int64) -> Int64 {
        let block = Int64(TarHeader.blockSize)
        return size % block == 0 ? size : size + (block - size % block)
    }

    /// The next 512-byte block; nil at the end of the stream; a partial block is an error.
    private func readBlock(entry: String?) throws -> [UInt8]? {
        let size = TarHeader.blockSize
        while pending.count < size {
            guard let more = try source.read(upTo: 1 << 20) else {
                if pending.isEmpty { return nil }
                throw OCIError.malformedTar(layer: layer, entry: entry, reason: "archive ends in the middle of a header block")
            }
            pending = pending.isEmpty ? more : ArraySlice(Array(pending) + more)
        }
        let block = Array(pending.prefix(size))
        pending = pending.dropFirst(size)
        position += Int64(size)
        return block
    }

    private func skip(_ count: Int64, entry: String?, what: String = "data") throws {
        var left = count
        while left > 0 {
            if pending.isEmpty, let seekable = source as? any SkippingByteSource {
                let skipped = try seekable.skip(left)
                position += skipped
                left -= skipped
                guard left == 0 else {
                    throw OCIError.malformedTar(layer: layer, entry: entry, reason: "archive ends in the middle of \(what) (\(left) bytes missing)")
                }
                return
            }
            if pending.isEmpty {
                guard let more = try source.read(upTo: Int(min(left, 1 << 20))) else {
                    throw OCIError.malformedTar(layer: layer, entry: entry, reason: "archive ends in the middle of \(what) (\(left) bytes missing)")
                }
                pending = more
            }
            let n = Int(min(Int64(pending.count), left))
            pending = pending.dropFirst(n)
            left -= Int64(n)
            position += Int64(n)
        }
    }

    /// The payload of a PAX or GNU long-name header, plus its padding.
    private func readMetadata(size: Int64, entry: String) throws -> [UInt8] {
        guard size <= Self.metadataLimit else {
            throw OCIError.malformedTar(layer: layer, entry: entry, reason: "extended header of \(size) bytes is larger than \(Self.metadataLimit)")
        }
        var out = [UInt8]()
        out.reserveCapacity(Int(size))
        while out.count < Int(size) {
            if pending.isEmpty {
                guard let more = try source.read(upTo: 1 << 20) else {
                    throw OCIError.malformedTar(layer: layer, entry: entry, reason: "archive ends in the middle of an extended header")
                }
                pending = more
            }
            let n = min(pending.count, Int(size) - out.count)
            out.append(contentsOf: pending.prefix(n))
            pending = pending.dropFirst(n)
            position += Int64(n)
        }
        try skip(Self.padded(size) - size, entry: entry, what: "the padding of an extended header")
        return out
    }

    /// PAX records: "<length> <key>=<value>\n", where length counts the whole record.
    private func parsePAX(_ data: [UInt8], entry: String) throws -> [(key: [UInt8], value: [UInt8])] {
        var records: [(key: [UInt8], value: [UInt8])] = []
        var i = 0
        while i < data.count {
            // Some writers pad the record area with NULs.
            if data[i] == 0 { break }
            var length = 0
            var j = i
            while j < data.count, (0x30...0x39).contains(data[j]), length < Int(Self.metadataLimit) {
                length = length * 10 + Int(data[j] - 0x30)
                j += 1
            }
            guard j < data.count, data[j] == 0x20, length > j - i + 1, i + length <= data.count, data[i + length - 1] == 0x0a else {
                throw OCIError.malformedTar(layer: layer, entry: entry, reason: "malformed PAX record at byte \(i) of the extended header")
            }
            let body = data[(j + 1)..<(i + length - 1)]
            guard let equals = body.firstIndex(of: UInt8(ascii: "=")) else {
                throw OCIError.malformedTar(layer: layer, entry: entry, reason: "PAX record without '=' at byte \(i) of the extended header")
            }
            records.append((key: Array(body[..<equals]), value: Array(body[(equals + 1)...])))
            i += length
        }
        return records
    }
}

/// A PAX time value "[-]seconds[.fraction]" split into seconds and nanoseconds (floor semantics:
/// -1.25 is -2 s + 750 000 000 ns).
struct PAXTime {
    var seconds: Int64
    var nanoseconds: UInt32

    init?(_ text: String) {
        var rest = Substring(text)
        let negative = rest.hasPrefix("-")
        if negative { rest = rest.dropFirst() }
        let parts = rest.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.allSatisfy({ $0.isASCII && $0.isNumber }),
              let s = Int64(whole) else { return nil }
        var ns: Int64 = 0
        if parts.count == 2 {
            let fraction = parts[1]
            guard fraction.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            let kept = String(fraction.prefix(9))
            let digits = kept + String(repeating: "0", count: 9 - kept.count)
            ns = Int64(digits) ?? 0
        }
        if negative {
            seconds = ns > 0 ? -s - 1 : -s
            nanoseconds = UInt32(ns > 0 ? 1_000_000_000 - ns : 0)
        } else {
            seconds = s
            nanoseconds = UInt32(ns)
        }
    }
}
