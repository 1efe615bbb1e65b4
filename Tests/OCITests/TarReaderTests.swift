import Foundation
import Testing
@testable import OCI

@Suite struct TarReaderTests {
    struct Expected {
        var path: String
        var kind: TarEntry.Kind
        var mode: UInt32
        var size: Int64 = 0
        var data: [UInt8] = []
        var link: String? = nil
    }

    static func check(_ entries: [(entry: TarEntry, data: [UInt8])], _ expected: [Expected], uid: UInt32, gid: UInt32) {
        #expect(entries.count == expected.count)
        for (got, want) in zip(entries, expected) {
            let e = got.entry
            #expect(e.path == components(want.path), "\(want.path)")
            #expect(e.kind == want.kind, "\(want.path)")
            #expect(e.mode == want.mode, "\(want.path)")
            #expect(e.size == want.size, "\(want.path)")
            #expect(got.data == want.data, "\(want.path)")
            #expect(e.uid == uid && e.gid == gid, "\(want.path)")
            switch want.kind {
            case .hardlink: #expect(e.hardlinkTarget == want.link.map(components), "\(want.path)")
            case .symlink: #expect(e.symlinkTarget == want.link.map { Array($0.utf8) }, "\(want.path)")
            default: #expect(e.hardlinkTarget == nil && e.symlinkTarget == nil, "\(want.path)")
            }
        }
    }

    @Test func readsGNUTarWithEveryLinkKind() throws {
        let entries = try readTar(try readFile("\(nydusTestData)/all-entry-type.tar"))
        let link = "tar/dir1/dir3/hardlink1.txt"
        Self.check(entries, [
            Expected(path: "tar", kind: .directory, mode: 0o755),
            Expected(path: "tar/dir1", kind: .directory, mode: 0o755),
            Expected(path: "tar/dir1/dir3", kind: .directory, mode: 0o755),
            Expected(path: link, kind: .regular, mode: 0o644, size: 15, data: Array("This is a test\n".utf8)),
            Expected(path: "tar/dir1/dir3/xfile.txt", kind: .hardlink, mode: 0o644, link: link),
            Expected(path: "tar/dir1/hardlink2.txt", kind: .hardlink, mode: 0o644, link: link),
            Expected(path: "tar/dir2", kind: .directory, mode: 0o755),
            Expected(path: "tar/dir2/hardlink3.txt", kind: .hardlink, mode: 0o644, link: link),
            Expected(path: "tar/dir2/symlink1.txt", kind: .symlink, mode: 0o755, link: "../dir1/dir3/file1.txt"),
        ], uid: 0, gid: 0)
        #expect(entries[0].entry.mtimeSeconds == 1665585322)
        #expect(entries[0].entry.mtimeNanoseconds == 0)
    }

    @Test func readsBSDTarWithPAXTimesAndXattrs() throws {
        let entries = try readTar(try readFile("\(nydusTestData)/all-entry-type-macos.tar"), pieceSize: 4096)
        let long = "tar/dir1/dir3/this_is_really_a_very_long_name_to_test_tar_entry_type_" + String(repeating: "a", count: 196) + ".txt"
        let target = "tar/dir1/hardlink2.txt"
        let apple = { (n: Int64) in Expected(path: "", kind: .regular, mode: 0o644, size: n) }
        var expected: [Expected] = [
            Expected(path: "tar", kind: .directory, mode: 0o755),
            Expected(path: "tar/dir2", kind: .directory, mode: 0o755),
            Expected(path: "tar/dir1", kind: .directory, mode: 0o755),
            apple(149),
            Expected(path: target, kind: .regular, mode: 0o644, size: 15, data: Array("This is a test\n".utf8)),
            Expected(path: "tar/dir1/._dir3", kind: .regular, mode: 0o755, size: 141),
            Expected(path: "tar/dir1/dir3", kind: .directory, mode: 0o755),
            apple(149),
            Expected(path: "tar/dir1/dir3/xfile.txt", kind: .hardlink, mode: 0o644, link: target),
            apple(149),
            Expected(path: "tar/dir1/dir3/hardlink1.txt", kind: .hardlink, mode: 0o644, link: target),
            Expected(path: long, kind: .regular, mode: 0o644, size: 10, data: Array("long name\n".utf8)),
            apple(149),
            Expected(path: "tar/dir2/hardlink3.txt", kind: .hardlink, mode: 0o644, link: target),
            Expected(path: "tar/dir2/._symlink1.txt", kind: .regular, mode: 0o755, size: 145),
            Expected(path: "tar/dir2/symlink1.txt", kind: .symlink, mode: 0o755, link: "../dir1/dir3/file1.txt"),
        ]
        // AppleDouble "._" files: check their paths and sizes; their data is Apple's resource format.
        expected[3].path = "tar/dir1/._hardlink2.txt"
        expected[7].path = "tar/dir1/dir3/._xfile.txt"
        expected[9].path = "tar/dir1/dir3/._hardlink1.txt"
        expected[12].path = "tar/dir2/._hardlink3.txt"
        for i in expected.indices where expected[i].path.contains("/._") {
            expected[i].data = entries[i].data
            #expect(entries[i].data.count == Int(expected[i].size))
            #expect(entries[i].data.starts(with: [0x00, 0x05, 0x16, 0x07]), "AppleDouble magic")
        }
        Self.check(entries, expected, uid: 502, gid: 20)

        // PAX mtime with nanoseconds, and the xattr stored twice (SCHILY and LIBARCHIVE) kept once.
        let file = entries[4].entry
        #expect(file.mtimeSeconds == 1665584430 && file.mtimeNanoseconds == 393557573)
        #expect(file.xattrs == [ExtendedAttribute("hardlink3", Array("value".utf8))])
        #expect(entries[6].entry.xattrs == [ExtendedAttribute("dir", Array("value".utf8))])
        #expect(entries[6].entry.mtimeSeconds == 1665628806 && entries[6].entry.mtimeNanoseconds == 107725102)
        #expect(entries[15].entry.xattrs == [ExtendedAttribute("symlink", Array("value".utf8))])
        #expect(entries[11].entry.mtimeNanoseconds == 117332458)
    }

    /// GNU and PAX archives written by Python's tarfile (the formats GNU tar and Go write).
    @Test(arguments: ["GNU_FORMAT", "PAX_FORMAT"])
    func readsLongNamesLinksAndLargeIDs(format: String) throws {
        let dir = try makeTemporaryDirectory("tar-\(format)")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let longDir = String(repeating: "d", count: 120)
        let longName = "\(longDir)/" + String(repeating: "f", count: 150)
        let longTarget = "/" + String(repeating: "t", count: 140)
        try python("""
        import sys, tarfile, io
        t = tarfile.open(sys.argv[1], 'w', format=tarfile.\(format))
        def add(name, type=tarfile.REGTYPE, data=b'', **kw):
            ti = tarfile.TarInfo(name); ti.type = type; ti.size = len(data)
            for k, v in kw.items(): setattr(ti, k, v)
            t.addfile(ti, io.BytesIO(data) if data else None)
        add(sys.argv[2], data=b'long', mode=0o4755, uid=3000000000, gid=2097152, mtime=1700000000)
        add('short/link', tarfile.SYMTYPE, linkname=sys.argv[3])
        add('short/hard', tarfile.LNKTYPE, linkname=sys.argv[2])
        add('dev/null', tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
        add('dev/sda', tarfile.BLKTYPE, mode=0o660, devmajor=8, devminor=0)
        add('run/fifo', tarfile.FIFOTYPE, mode=0o600)
        add('./dot//slashes/', tarfile.DIRTYPE, mode=0o1777)
        t.close()
        """, ["\(dir)/t.tar", longName, longTarget])
        let entries = try readTar(try readFile("\(dir)/t.tar"))
        #expect(entries.count == 7)
        guard entries.count == 7 else { return }
        let file = entries[0].entry
        #expect(file.path == components(longName))
        #expect(entries[0].data == Array("long".utf8))
        #expect(file.mode == 0o4755)
        // GNU writes these as base-256, PAX as records.
        #expect(file.uid == 3_000_000_000 && file.gid == 2_097_152)
        #expect(file.mtimeSeconds == 1_700_000_000)
        #expect(entries[1].entry.kind == .symlink && entries[1].entry.symlinkTarget == Array(longTarget.utf8))
        #expect(entries[2].entry.kind == .hardlink && entries[2].entry.hardlinkTarget == components(longName))
        #expect(entries[3].entry.kind == .characterDevice && entries[3].entry.deviceMajor == 1 && entries[3].entry.deviceMinor == 3)
        #expect(entries[4].entry.kind == .blockDevice && entries[4].entry.deviceMajor == 8 && entries[4].entry.deviceMinor == 0)
        #expect(entries[5].entry.kind == .fifo && entries[5].entry.mode == 0o600)
        #expect(entries[6].entry.kind == .directory && entries[6].entry.path == components("dot/slashes"))
        #expect(entries[6].entry.mode == 0o1777)
    }

    @Test func readsPAXFractionalTimesXattrsAndNonUTF8Names() throws {
        let dir = try makeTemporaryDirectory("tar-pax")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try python("""
        import sys, tarfile, io
        t = tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT, encoding='utf-8', errors='surrogateescape')
        ti = tarfile.TarInfo('caf\\udce9/\\udcff\\udcfe.bin'); ti.size = 3
        ti.pax_headers = {'mtime': '1700000000.5', 'SCHILY.xattr.user.comment': 'hi', 'SCHILY.xattr.security.capability': '\\x01\\x00'}
        t.addfile(ti, io.BytesIO(b'abc'))
        ti = tarfile.TarInfo('old'); ti.pax_headers = {'mtime': '-1.25'}
        t.addfile(ti)
        t.close()
        """, ["\(dir)/t.tar"])
        let entries = try readTar(try readFile("\(dir)/t.tar"))
        #expect(entries.count == 2)
        guard entries.count == 2 else { return }
        let e = entries[0].entry
        // Raw bytes pass through: Latin-1 "é" and 0xff 0xfe are not UTF-8.
        #expect(e.path == [[0x63, 0x61, 0x66, 0xe9], [0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e]])
        #expect(e.mtimeSeconds == 1_700_000_000 && e.mtimeNanoseconds == 500_000_000)
        #expect(e.xattrs == [ExtendedAttribute("user.comment", Array("hi".utf8)), ExtendedAttribute("security.capability", [1, 0])])
        #expect(entries[0].data == Array("abc".utf8))
        #expect(entries[1].entry.mtimeSeconds == -2 && entries[1].entry.mtimeNanoseconds == 750_000_000)
    }

    @Test func decodesLibarchiveXattrEncoding() throws {
        var tar = TarBuilder()
        // Name "user.a b%" URL-encoded, value bytes 00 ff 10 base64 without padding.
        tar.pax([("LIBARCHIVE.xattr.user.a%20b%25", Array("AP8Q".utf8)), ("path", Array("x/y".utf8))])
        tar.header("ignored-name", size: 0)
        tar.end()
        let entries = try readTar(tar.bytes)
        #expect(entries.map(\.entry.path) == [components("x/y")])
        #expect(entries.first?.entry.xattrs == [ExtendedAttribute("user.a b%", [0x00, 0xff, 0x10])])
        #expect(XattrEncoding.base64Decode(Array("dmFsdWU=".utf8)) == Array("value".utf8))
    }

    @Test func appliesGlobalPAXHeadersToLaterEntries() throws {
        var tar = TarBuilder()
        tar.pax([("uid", Array("77".utf8)), ("mtime", Array("5.000000001".utf8))], global: true)
        tar.file("a", "1")
        tar.pax([("uid", Array("8".utf8))])
        tar.file("b", "2")
        tar.end()
        let entries = try readTar(tar.bytes)
        #expect(entries.map(\.entry.uid) == [77, 8])
        #expect(entries.map(\.entry.mtimeNanoseconds) == [1, 1])
    }

    @Test func readsUstarPrefixV7AndSignedChecksums() throws {
        var tar = TarBuilder()
        tar.header(name: Array("name.txt".utf8), size: 2, prefix: Array("some/prefix".utf8))
        tar.data([1, 2])
        // A v7 header: no magic, directory marked by a trailing slash and type NUL.
        tar.header(name: Array("olddir/".utf8), type: 0, magic: .v7)
        // A byte >= 0x80 in the name makes signed and unsigned sums differ; write the signed one.
        var block = [UInt8](repeating: 0, count: 512)
        let name: [UInt8] = [0x73, 0xe9]
        block.replaceSubrange(0..<2, with: name)
        for (offset, text) in [(100, "0000644\0"), (108, "0000000\0"), (116, "0000000\0"), (124, "00000000000\0"), (136, "00000000000\0")] {
            block.replaceSubrange(offset..<(offset + 8 + (offset >= 124 ? 4 : 0)), with: Array(text.utf8))
        }
        block[156] = UInt8(ascii: "0")
        block.replaceSubrange(148..<156, with: Array("        ".utf8))
        let signed = block.reduce(0) { $0 + Int(Int8(bitPattern: $1)) }
        let text = String(signed, radix: 8)
        block.replaceSubrange(148..<156, with: Array((String(repeating: "0", count: 6 - text.count) + text + "\0 ").utf8))
        tar.bytes += block
        tar.end()
        let entries = try readTar(tar.bytes)
        #expect(entries.map(\.entry.path) == [components("some/prefix/name.txt"), components("olddir"), [name]])
        #expect(entries.map(\.entry.kind) == [.regular, .directory, .regular])
    }

    @Test func parsesHugeDeclaredSizesWithoutReadingThem() throws {
        var tar = TarBuilder()
        // 2^40 + 1 bytes in GNU base-256: 0x80 marker, big-endian value in the rest of the field.
        var field = [UInt8](repeating: 0, count: 12)
        field[0] = 0x80
        let size: Int64 = (1 << 40) + 1
        for i in 0..<8 { field[11 - i] = UInt8(truncatingIfNeeded: size >> (8 * i)) }
        tar.header(name: Array("huge.img".utf8), magic: .gnu, rawFields: [124: field])
        tar.data(Array("only the start".utf8))
        // An octal 11-digit maximum: 8 GiB - 1.
        var octal = TarBuilder()
        octal.header("big", size: 0o77777777777)
        let reader = TarReader(source: BytesSource(tar.bytes), layer: "huge")
        let entry = try reader.next()
        #expect(entry?.size == size)
        #expect(try reader.readData(upTo: 14).map(Array.init) == Array("only the start".utf8))
        expectOCIError("truncated huge file", { _ = try reader.next() }) {
            if case let .malformedTar(layer, entry, _) = $0 { return layer == "huge" && entry == "huge.img" }
            return false
        }
        let octalEntry = try TarReader(source: BytesSource(octal.bytes), layer: "o").next()
        #expect(octalEntry?.size == 0o77777777777)
        #expect(TarHeader.number([0xff, 0xff, 0xff, 0xfe][...]) == -2)
        #expect(TarHeader.number(Array("  0017 \0".utf8)[...]) == 15)
        #expect(TarHeader.number(Array("12x\0".utf8)[...]) == nil)
    }

    @Test(arguments: [0, 1])
    func endsAtZeroBlocksOrAtABlockBoundary(zeroBlocks: Int) throws {
        var tar = TarBuilder()
        tar.file("a", "x")
        tar.bytes += [UInt8](repeating: 0, count: 512 * zeroBlocks)
        #expect(try readTar(tar.bytes).count == 1)
    }

    /// GNU's PAX sparse formats 0.0 and 0.1 (map in records) and 1.0 (map at the start of the
    /// data, real name in GNU.sparse.name) all read as the expanded file.
    @Test func paxSparseFilesReadWithTheirHoles() throws {
        let expected = [UInt8](repeating: 0, count: 3) + Array("ab".utf8) + [0, 0, 0, 0] + Array("c".utf8) + [0, 0]
        var tar = TarBuilder()
        tar.pax([("GNU.sparse.offset", Array("3".utf8)), ("GNU.sparse.numbytes", Array("2".utf8)),
                 ("GNU.sparse.offset", Array("9".utf8)), ("GNU.sparse.numbytes", Array("1".utf8)),
                 ("GNU.sparse.size", Array("12".utf8))])
        tar.file("v00", "abc")
        tar.pax([("GNU.sparse.map", Array("3,2,9,1".utf8)), ("GNU.sparse.size", Array("12".utf8))])
        tar.file("v01", "abc")
        tar.pax([("GNU.sparse.major", Array("1".utf8)), ("GNU.sparse.minor", Array("0".utf8)),
                 ("GNU.sparse.name", Array("dir/v10".utf8)), ("GNU.sparse.realsize", Array("12".utf8))])
        var map = Array("2\n3\n2\n9\n1\n".utf8)
        map += [UInt8](repeating: 0, count: 512 - map.count)
        tar.header(name: Array("GNUSparseFile.0/v10".utf8), size: Int64(map.count + 3))
        tar.data(map + Array("abc".utf8))
        // Old GNU 'S': pairs of 12-byte octal fields at 386, real size at 483.
        func octal12(_ v: Int) -> [UInt8] { let t = String(v, radix: 8); return Array((String(repeating: "0", count: 11 - t.count) + t).utf8) + [0] }
        tar.header(name: Array("gnu".utf8), type: UInt8(ascii: "S"), size: 3, magic: .gnu,
                   rawFields: [386: octal12(3) + octal12(2) + octal12(9) + octal12(1), 483: octal12(12)])
        tar.data(Array("abc".utf8))
        tar.pax([("GNU.sparse.map", Array("".utf8)), ("GNU.sparse.size", Array("5".utf8))])
        tar.file("allhole", "")
        tar.end()
        let entries = try readTar(tar.bytes)
        // A source that hands out 100 bytes at a time: the 1.0 map must still end exactly at
        // its block boundary (reading past it would shift the file's data).
        let trickled = TarReader(source: TrickleSource(tar.bytes, piece: 100), layer: "t")
        var trickledData: [[UInt8]] = []
        while try trickled.next() != nil {
            var data = [UInt8]()
            while let piece = try trickled.readData(upTo: 1000) { data += piece }
            trickledData.append(data)
        }
        #expect(trickledData == entries.map(\.data))
        #expect(entries.map(\.entry.displayPath) == ["v00", "v01", "dir/v10", "gnu", "allhole"])
        for (entry, data) in entries.prefix(4) {
            #expect(entry.size == 12 && data == expected, "\(entry.displayPath)")
        }
        #expect(entries[4].entry.size == 5 && entries[4].data == [0, 0, 0, 0, 0])
    }
}

/// Hands out at most `piece` bytes per read, as a network or decompressing source may.
final class TrickleSource: ByteSource {
    private let bytes: [UInt8]
    private let piece: Int
    private var position = 0

    init(_ bytes: [UInt8], piece: Int) {
        self.bytes = bytes
        self.piece = piece
    }

    func read(upTo count: Int) throws -> ArraySlice<UInt8>? {
        guard position < bytes.count, count > 0 else { return nil }
        let end = min(bytes.count, position + min(count, piece))
        defer { position = end }
        return bytes[position..<end]
    }
}
