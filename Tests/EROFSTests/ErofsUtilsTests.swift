import Foundation
import Testing
@testable import EROFS

/// erofs-utils as the oracle: fsck.erofs accepts and extracts Ferry's images, dump.erofs
/// reports the same counts and sizes, and Ferry's reader reads images mkfs.erofs made.
@Suite struct ErofsUtilsTests {
    static let haveUtils = haveTool("fsck.erofs") && haveTool("dump.erofs") && haveTool("mkfs.erofs")

    @Test func fsckExtractsTheSelfContainedImage() throws {
        guard Self.haveUtils else { print("skipping: erofs-utils not installed"); return }
        let fixture = RichFixture.selfContained()
        let scratch = try Scratch("fsck")
        defer { scratch.cleanup() }
        let (image, _) = try fixture.materialize(in: scratch)
        let check = try run("fsck.erofs", [image])
        #expect(check.status == 0, "\(check.output)")
        let out = scratch.path("out")
        let extract = try run("fsck.erofs", ["--extract=" + out, image])
        try #require(extract.status == 0, "\(extract.output)")
        let listed = try listTree(out)
        // fsck.erofs 1.5 extracts neither xattrs nor hard links nor setuid/setgid/sticky bits,
        // creates symlinks with mode 0777, and writes chunk-based files without their holes
        // (the bytes after a hole land at the hole's offset); the kernel test covers all of those.
        var rules = Comparison(xattrs: false, inodeNumbers: false, specialPermissionBits: false,
                               symlinkPermissions: false)
        rules.skipContent = ["/chunked-local"]
        let problems = try compare(listed, with: fixture, nids: [], rules: rules) { label in try readFileRange(out + label) }
        #expect(problems.count == 0, "\(problems.prefix(10).joined(separator: "\n"))")
    }

    @Test func fsckAcceptsTheBootstrapWithDevices() throws {
        guard Self.haveUtils else { print("skipping: erofs-utils not installed"); return }
        let scratch = try Scratch("fsck-dev")
        defer { scratch.cleanup() }
        let (image, devices) = try RichFixture.withDevices().materialize(in: scratch)
        let check = try run("fsck.erofs", devices.map { "--device=" + $0 } + [image])
        #expect(check.status == 0, "\(check.output)")
    }

    @Test func dumpAgreesOnCountsAndSizes() throws {
        guard Self.haveUtils else { print("skipping: erofs-utils not installed"); return }
        let fixture = RichFixture.withDevices()
        let scratch = try Scratch("dump")
        defer { scratch.cleanup() }
        let (image, devices) = try fixture.materialize(in: scratch)
        let encoded = try ImageWriter.encode(fixture.tree)
        let deviceFlags = devices.map { "--device=" + $0 }
        let superblock = try run("dump.erofs", deviceFlags + ["-s", image])
        try #require(superblock.status == 0, "\(superblock.output)")
        #expect(field(superblock.output, "Filesystem inode count:") == "\(fixture.tree.nodes.count)")
        // dump.erofs counts the extra devices' blocks too.
        let deviceBlocks = fixture.tree.devices.reduce(UInt32(0)) { $0 + $1.blocks }
        #expect(field(superblock.output, "Filesystem blocks:") == "\(encoded.totalBlocks + deviceBlocks)")
        #expect(field(superblock.output, "Filesystem root nid:") == "\(encoded.nids[0])")
        #expect(superblock.output.contains("sb_csum"))

        let stats = try run("dump.erofs", deviceFlags + ["-S", image])
        try #require(stats.status == 0, "\(stats.output)")
        var counts: [FileType: Int] = [:]
        var totalSize: UInt64 = 0
        for (_, node) in fixture.paths() {
            let content = fixture.tree.nodes[node].content
            counts[FileType(content), default: 0] += 1
            if case let .regular(size, _) = content { totalSize += size }
        }
        #expect(field(stats.output, "Filesystem total file count:") == "\(fixture.paths().count)")
        #expect(field(stats.output, "Filesystem regular file count:") == "\(counts[.regular] ?? 0)")
        #expect(field(stats.output, "Filesystem directory count:") == "\(counts[.directory] ?? 0)")
        #expect(field(stats.output, "Filesystem symlink file count:") == "\(counts[.symlink] ?? 0)")
        #expect(field(stats.output, "Filesystem FIFO file count:") == "\(counts[.fifo] ?? 0)")
        #expect(field(stats.output, "Filesystem total original file size:") == "\(totalSize) Bytes")

        for path in ["/huge", "/chunked", "/tail-5000", "/dir/a", "/big"] {
            let inode = try run("dump.erofs", deviceFlags + ["--path=" + path, image])
            try #require(inode.status == 0, "\(inode.output)")
            let reader = try ImageReader(path: image)
            let mine = try reader.lookup(path: path)
            #expect(inode.output.contains("Size: \(mine.size) "), "\(path): \(inode.output)")
            #expect(inode.output.contains("NID: \(mine.nid) "), "\(path): \(inode.output)")
            #expect(inode.output.contains("Links: \(mine.nlink) "), "\(path): \(inode.output)")
        }
    }

    /// mkfs.erofs images of a directory tree: default (tail-packed), without inline data,
    /// and chunk-based with a blob device. Ferry's reader must see the source directory.
    @Test(arguments: [["-T1700000000"], ["-T1700000000", "-Enoinline_data"],
                      ["-T1700000000", "--chunksize=4096", "--blobdev=BLOB"]])
    func readerReadsMkfsImages(options: [String]) throws {
        guard Self.haveUtils else { print("skipping: erofs-utils not installed"); return }
        let scratch = try Scratch("mkfs")
        defer { scratch.cleanup() }
        let source = scratch.path("src")
        try makeSourceTree(at: source)
        let image = scratch.path("image.erofs")
        let blob = scratch.path("blob.img")
        let made = try run("mkfs.erofs", options.map { $0.replacingOccurrences(of: "BLOB", with: blob) } + [image, source])
        try #require(made.status == 0, "\(made.output)")
        let reader = try ImageReader(path: image)
        let blobBytes = options.contains { $0.hasPrefix("--blobdev") } ? [UInt8](try Data(contentsOf: URL(fileURLWithPath: blob))) : []
        #expect(reader.deviceSlots.count == (blobBytes.isEmpty ? 0 : 1))
        let listed = try listTree(source)
        var seen: [String: ListedEntry] = [:]
        for entry in listed { seen[entry.path] = entry }
        var visited = 0
        try reader.walk { path, inode in
            visited += 1
            guard let entry = seen[hexString(path)] else {
                Issue.record("reader found \(printable(path)) which is not in the source")
                return
            }
            let label = printable(path)
            #expect(UInt32(inode.mode) == entry.mode, "\(label)")
            #expect(inode.uid == entry.uid && inode.gid == entry.gid, "\(label)")
            #expect(inode.nlink == entry.nlink || inode.type == .directory, "\(label)")
            if inode.type != .directory {
                #expect(inode.size == entry.size, "\(label)")
            }
            #expect(inode.xattrs.count == entry.xattrs.count, "\(label)")
            for xattr in inode.xattrs {
                #expect(entry.xattrs[hexString(xattr.name)] == hexString(xattr.value), "\(label)")
            }
            switch inode.type {
            case .regular:
                let content = try reader.contents(of: inode) { device, offset, count in
                    Array(blobBytes[Int(offset)..<Int(offset) + count])
                }
                #expect(hexString(content) == entry.content, "\(label)")
            case .symlink:
                #expect(hexString(try reader.symlinkTarget(inode)) == entry.target, "\(label)")
            case .characterDevice, .blockDevice:
                #expect((inode.rdev & 0xFFF00) >> 8 == entry.rdev_major, "\(label)")
            default:
                break
            }
        }
        #expect(visited == listed.count)
        if blobBytes.isEmpty == false {
            let file = try reader.lookup(path: "/data/random-20000")
            guard case let .chunked(log2, indexed, _, count) = file.layout else {
                Issue.record("expected a chunk-based inode, got \(file.layout)")
                return
            }
            #expect(log2 == 12 && indexed && count == 5)
            #expect(try reader.chunks(of: file).allSatisfy { if case .stored(device: 1, _) = $0 { return true }; return false })
        }
    }

    /// A source tree with files of several sizes, a big directory, links, xattrs, devices.
    private func makeSourceTree(at root: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/data/deep/er/still", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/many", withIntermediateDirectories: true)
        for (name, size) in [("empty", 0), ("tiny", 5), ("random-20000", 20000), ("exact-8192", 8192), ("tail-4100", 4100)] {
            try Data(pattern(size, seed: UInt64(size))).write(to: URL(fileURLWithPath: root + "/data/" + name))
        }
        try Data("deep".utf8).write(to: URL(fileURLWithPath: root + "/data/deep/er/still/file"))
        for index in 0..<600 {
            try Data().write(to: URL(fileURLWithPath: root + "/many/file-with-a-long-name-\(index)"))
        }
        try fm.createSymbolicLink(atPath: root + "/data/link", withDestinationPath: "tiny")
        try fm.linkItem(atPath: root + "/data/tiny", toPath: root + "/data/tiny-hardlink")
        _ = try run("setfattr", ["-n", "user.note", "-v", "hello", root + "/data/tiny"])
        _ = try run("mknod", [root + "/data/null", "c", "1", "3"])
        _ = try run("mkfifo", [root + "/data/fifo"])
        _ = try run("chmod", ["4755", root + "/data/random-20000"])
        _ = try run("chown", ["1234:5678", root + "/data/exact-8192"])
    }

    private func field(_ output: String, _ name: String) -> String? {
        output.split(separator: "\n").first { $0.hasPrefix(name) }
            .map { $0.dropFirst(name.count).trimmingCharacters(in: .whitespaces) }
    }
}
