import Foundation
@testable import EROFS

/// A tree with every node type and layout, plus the bytes its data references.
struct RichFixture {
    var tree: ImageTree
    /// Contiguous data blocks 1 ..< 1 + tree.dataBlocks.
    var data: [UInt8]
    /// Contents of extra devices 1...N.
    var devices: [[UInt8]]

    /// Self-contained image: contiguous files, chunked files on device 0, no extra devices.
    static func selfContained() -> RichFixture {
        var builder = TreeBuilder()
        addCommon(&builder)
        let data = pattern(16 * 4096, seed: 7)
        builder.add("contiguous", builder.node(.regular(size: 3 * 4096 + 17, data: .contiguous(block: 1))))
        builder.add("contiguous-exact", builder.node(.regular(size: 2 * 4096, data: .contiguous(block: 5))))
        builder.add("chunked-local", builder.node(.regular(
            size: 4 * 4096 + 5,
            data: .chunked(chunkSizeLog2: 13, chunks: [.stored(device: 0, block: 8), .hole, .stored(device: 0, block: 12)]))))
        var tree = ImageTree(nodes: builder.nodes, dataBlocks: 16, volumeName: bytes("ferry-test"))
        tree.uuid = [UInt8](1...16)
        return RichFixture(tree: tree, data: data, devices: [])
    }

    /// Bootstrap: no data blocks, chunked files spread over two extra devices, a >4 GiB file.
    ///
    /// With `sectorContiguousAcrossDevices` the third chunk of `/chunked` starts on device 2 at the
    /// block where the first chunk ended on device 1 (a hole between them). File-backed mounts
    /// must read each device's bytes; block-device (loop) mounts hit a kernel bug there: iomap
    /// readahead appends the second extent to the open bio of the first device because only the
    /// sector is compared (Kernel-Notes/erofs-layout.md, "Multi-device images on loop devices").
    static func withDevices(sectorContiguousAcrossDevices: Bool = true) -> RichFixture {
        var builder = TreeBuilder()
        addCommon(&builder)
        let devices = [pattern(64 * 4096, seed: 11), pattern(64 * 4096, seed: 13)]
        builder.add("chunked", builder.node(.regular(
            size: 5 * 16384 + 100,
            data: .chunked(chunkSizeLog2: 14, chunks: [
                .stored(device: 1, block: 0), .hole, .stored(device: 2, block: sectorContiguousAcrossDevices ? 4 : 12),
                .stored(device: 1, block: 8), .stored(device: 2, block: 40), .stored(device: 1, block: 60),
            ]))))
        builder.add("chunked-4k", builder.node(.regular(
            size: 3 * 4096,
            data: .chunked(chunkSizeLog2: 12, chunks: [.stored(device: 2, block: 63), .hole, .stored(device: 1, block: 1)]))))
        // 4 GiB + 1 byte, 64 KiB chunks: first and last chunk stored, the rest holes.
        let hugeSize: UInt64 = (1 << 32) + 1
        var hugeChunks = [ChunkReference](repeating: .hole, count: 65537)
        hugeChunks[0] = .stored(device: 1, block: 16)
        hugeChunks[65536] = .stored(device: 2, block: 32)
        var huge = builder.node(.regular(size: hugeSize, data: .chunked(chunkSizeLog2: 16, chunks: hugeChunks)))
        huge.xattrs = [ExtendedAttribute(name: bytes("user.huge"), value: bytes("yes"))]
        builder.add("huge", huge)
        let tree = ImageTree(nodes: builder.nodes,
                             devices: [DeviceSlot(tag: bytes(String(repeating: "a1", count: 32)), blocks: 64),
                                       DeviceSlot(tag: bytes("blob-two"), blocks: 64)])
        return RichFixture(tree: tree, data: [], devices: devices)
    }

    /// What every fixture shares: all node types, permissions, xattrs, hard links, a
    /// 3,000-entry directory, long and non-UTF-8 names, deep paths, odd timestamps and ids.
    static func addCommon(_ builder: inout TreeBuilder) {
        builder.nodes[0].xattrs = [ExtendedAttribute(name: bytes("user.root"), value: bytes("r"))]
        builder.add("hello", builder.node(.regular(size: 6, data: .inline(bytes("hello\n")))))
        builder.add("empty", builder.node(.regular(size: 0, data: .inline([]))))
        let tail = pattern(5000, seed: 1)
        builder.add("tail-5000", builder.node(.regular(size: 5000, data: .inline(tail))))
        builder.add("exact-4096", builder.node(.regular(size: 4096, data: .inline(pattern(4096, seed: 2)))))
        builder.add("big-tail", builder.node(.regular(size: 4090, data: .inline(pattern(4090, seed: 3)))))
        var withXattrs = builder.node(.regular(size: 3000, data: .inline(pattern(3000, seed: 4))), 0o600)
        withXattrs.xattrs = [
            ExtendedAttribute(name: bytes("user.comment"), value: bytes("a comment")),
            ExtendedAttribute(name: bytes("trusted.overlay.opaque"), value: bytes("y")),
            ExtendedAttribute(name: bytes("security.capability"),
                              value: [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            ExtendedAttribute(name: bytes("user.empty"), value: []),
            ExtendedAttribute(name: bytes("user.big"), value: pattern(1500, seed: 5)),
        ]
        builder.add("xattr-file", withXattrs)

        // Permissions and ids.
        builder.add("setuid", builder.node(.regular(size: 2, data: .inline(bytes("#!"))), 0o4755))
        builder.add("setgid-dir", builder.node(.directory(entries: []), 0o2775))
        builder.add("sticky", builder.node(.directory(entries: []), 0o1777))
        builder.add("no-perms", builder.node(.regular(size: 1, data: .inline([0x41])), 0o000))
        var bigIDs = builder.node(.regular(size: 3, data: .inline(bytes("ids"))), 0o640)
        bigIDs.uid = 100_000
        bigIDs.gid = 4_000_000_000
        builder.add("big-ids", bigIDs)
        var smallIDs = builder.node(.regular(size: 3, data: .inline(bytes("sid"))), 0o640)
        smallIDs.uid = 1000
        smallIDs.gid = 65535
        builder.add("small-ids", smallIDs)

        // Timestamps: another second, nanoseconds, before 1970.
        var later = builder.node(.regular(size: 1, data: .inline([0x31])))
        later.mtimeSeconds = 1_800_000_000
        later.mtimeNanoseconds = 123_456_789
        builder.add("time-later", later)
        var old = builder.node(.fifo)
        old.mtimeSeconds = -1000
        old.mtimeNanoseconds = 5
        builder.add("time-before-1970", old)

        // Special files.
        builder.add("null", builder.node(.characterDevice(rdev: encodeDevice(major: 1, minor: 3)), 0o666))
        builder.add("sda1", builder.node(.blockDevice(rdev: encodeDevice(major: 8, minor: 1)), 0o660))
        builder.add("bigdev", builder.node(.blockDevice(rdev: encodeDevice(major: 259, minor: 300)), 0o660))
        builder.add("fifo", builder.node(.fifo))
        builder.add("socket", builder.node(.socket, 0o755))

        // Symlinks: short (inline), one that cannot sit in the inode block, non-UTF-8 target.
        builder.add("link", builder.node(.symlink(target: bytes("hello")), 0o777))
        builder.add("long-link", builder.node(.symlink(target: [UInt8](repeating: 0x78, count: 4000)), 0o777))
        builder.add("odd-link", builder.node(.symlink(target: [0x2E, 0x2F, 0xFF, 0xFE]), 0o777))

        // Hard links: one node named three times in two directories.
        let dir = builder.add("dir", builder.node(.directory(entries: []), 0o750))
        var shared = builder.node(.regular(size: 7, data: .inline(bytes("shared\n"))))
        shared.xattrs = [ExtendedAttribute(name: bytes("user.link"), value: bytes("3"))]
        let sharedNode = builder.add("a", shared, in: dir)
        builder.link(bytes("b"), to: sharedNode, in: dir)
        builder.link(bytes("hardlink"), to: sharedNode, in: 0)
        var acl = builder.node(.directory(entries: []), 0o770)
        acl.xattrs = [
            ExtendedAttribute(name: bytes("system.posix_acl_access"), value: posixACL(userID: 1000)),
            ExtendedAttribute(name: bytes("system.posix_acl_default"), value: posixACL(userID: 1001)),
        ]
        builder.add("acl-dir", acl, in: dir)

        // A big directory: 3,000 entries over several blocks, long and non-UTF-8 names.
        let big = builder.add("big", builder.node(.directory(entries: []), 0o755))
        for index in 0..<3000 {
            let name: [UInt8]
            switch index % 100 {
            case 0: name = bytes(String(format: "%05d-", index)) + [UInt8](repeating: 0x6C, count: 249)
            case 1: name = [0xFF, 0xC3, 0x28, 0x80] + bytes(String(index))
            case 2: name = bytes("Z\(index)")
            default: name = bytes("entry-\(index)")
            }
            let content: NodeContent = index % 3 == 0
                ? .regular(size: UInt64(index % 50), data: .inline([UInt8](repeating: UInt8(index % 251), count: index % 50)))
                : (index % 3 == 1 ? .fifo : .symlink(target: bytes("t\(index)")))
            builder.add(name, builder.node(content), in: big)
        }
        builder.add([UInt8](repeating: 0x6E, count: 255), builder.node(.regular(size: 4, data: .inline(bytes("long")))))

        // Deep path: 40 nested directories.
        var parent = 0
        for level in 0..<40 {
            parent = builder.add("level-\(level)", builder.node(.directory(entries: []), 0o755), in: parent)
        }
        builder.add("leaf", builder.node(.regular(size: 4, data: .inline(bytes("deep")))), in: parent)
    }

    /// A valid POSIX ACL xattr value (version 2): user::rw-, user:ID:r--, group::r--, mask::r--, other::---.
    static func posixACL(userID: UInt32) -> [UInt8] {
        var value: [UInt8] = []
        func le16(_ v: UInt16) { value += [UInt8(v & 0xFF), UInt8(v >> 8)] }
        func le32(_ v: UInt32) { le16(UInt16(v & 0xFFFF)); le16(UInt16(v >> 16)) }
        le32(2)
        for (tag, perm, id) in [(UInt16(0x01), UInt16(6), UInt32.max), (0x02, 4, userID), (0x04, 4, UInt32.max),
                                (0x10, 4, UInt32.max), (0x20, 0, UInt32.max)] {
            le16(tag)
            le16(perm)
            le32(id)
        }
        return value
    }

    /// Expected bytes `offset ..< offset + count` of regular node `index` from the model.
    func expectedBytes(node index: Int, offset: UInt64, count: Int) -> [UInt8] {
        guard case let .regular(size, data) = tree.nodes[index].content else { return [] }
        let end = min(size, offset + UInt64(count))
        guard offset < end else { return [] }
        switch data {
        case let .inline(bytes):
            return Array(bytes[Int(offset)..<Int(end)])
        case let .contiguous(block):
            let start = (Int(block) - 1) * 4096 + Int(offset)
            return Array(self.data[start..<start + Int(end - offset)])
        case let .chunked(log2, chunks):
            var result = [UInt8]()
            var position = offset
            while position < end {
                let number = Int(position >> UInt64(log2))
                let chunkStart = UInt64(number) << UInt64(log2)
                let chunkEnd = min(end, chunkStart + (1 << UInt64(log2)))
                let length = Int(chunkEnd - position)
                switch chunks[number] {
                case .hole:
                    result += [UInt8](repeating: 0, count: length)
                case let .stored(device, block):
                    let within = Int(position - chunkStart)
                    if device == 0 {
                        let start = (Int(block) - 1) * 4096 + within
                        result += self.data[start..<start + length]
                    } else {
                        let start = Int(block) * 4096 + within
                        result += devices[Int(device) - 1][start..<start + length]
                    }
                }
                position = chunkEnd
            }
            return result
        }
    }

    /// Every path of the model (depth first, sorted names) with its node index.
    func paths() -> [(path: [UInt8], node: Int)] {
        var result: [([UInt8], Int)] = []
        var stack: [([UInt8], Int)] = [([0x2F], 0)]
        while let (path, node) = stack.popLast() {
            result.append((path, node))
            guard case let .directory(entries) = tree.nodes[node].content else { continue }
            let prefix = path == [0x2F] ? [] : path
            for entry in entries.sorted(by: { $0.name.lexicographicallyPrecedes($1.name) }).reversed() {
                stack.append((prefix + [0x2F] + entry.name, entry.node))
            }
        }
        return result
    }

    /// Link count the model implies for each node.
    func linkCounts() -> [UInt32] {
        var counts = [UInt32](repeating: 0, count: tree.nodes.count)
        counts[0] = 2
        for node in tree.nodes {
            guard case let .directory(entries) = node.content else { continue }
            for entry in entries {
                if case .directory = tree.nodes[entry.node].content {
                    counts[entry.node] += 2
                } else {
                    counts[entry.node] += 1
                }
            }
        }
        for (index, node) in tree.nodes.enumerated() {
            guard case let .directory(entries) = node.content else { continue }
            counts[index] += UInt32(entries.filter { if case .directory = tree.nodes[$0.node].content { return true }; return false }.count)
        }
        return counts
    }

    /// Writes the image and the device files into `scratch`; returns the image path.
    func materialize(in scratch: Scratch) throws -> (image: String, devices: [String]) {
        let image = try ImageWriter.encode(tree)
        try writeImage(image, data: data, to: scratch.path("image.erofs"))
        var paths: [String] = []
        for (index, device) in devices.enumerated() {
            let path = scratch.path("device\(index + 1).blob")
            try Data(device).write(to: URL(fileURLWithPath: path))
            paths.append(path)
        }
        return (scratch.path("image.erofs"), paths)
    }
}
