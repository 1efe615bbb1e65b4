import Blob
import EROFS
import FerrySystem
import OCI

/// Turns the merged layer tree into the EROFS writer's model: only nodes reachable from the
/// root (whiteouts and replacements leave orphans behind), hard links as shared nodes, regular
/// files with their inline bytes or chunk references, and one device slot per blob.
enum TreeLayout {
    static func imageTree(from tree: MergedTree<FilePayload>, chunks: FileChunkTable, chunkSizeLog2: UInt8,
                          blobs: [BlobInfo], seed: String) throws -> ImageTree {
        var newIndex: [Int: Int] = [MergedTree<FilePayload>.root: 0]
        var order: [Int] = [MergedTree<FilePayload>.root]
        var nodes: [EROFS.Node] = []
        // At most every merged node is reachable: reserving avoids growth by doubling, whose spare
        // capacity (and the moment old and new storage coexist) is this build's memory peak.
        nodes.reserveCapacity(tree.nodes.count)
        order.reserveCapacity(tree.nodes.count)
        newIndex.reserveCapacity(tree.nodes.count)
        var cursor = 0
        // Breadth-first, children in byte order: the numbering depends only on the tree.
        while cursor < order.count {
            let old = order[cursor]
            cursor += 1
            let source = tree.nodes[old]
            var entries: [DirectoryEntry] = []
            if source.isDirectory {
                for (name, child) in source.children.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                    let index: Int
                    if let known = newIndex[child] {
                        index = known
                    } else {
                        index = order.count
                        newIndex[child] = index
                        order.append(child)
                    }
                    entries.append(DirectoryEntry(name: name, node: index))
                }
            }
            nodes.append(try node(from: source, entries: entries, chunks: chunks, chunkSizeLog2: chunkSizeLog2))
        }
        let devices = try blobs.map { blob -> DeviceSlot in
            let blocks = blob.uncompressedSize / blobBlockSize
            guard blocks <= UInt64(UInt32.max) else { throw ConversionError.limitExceeded("blob larger than 16 TiB") }
            return DeviceSlot(tag: Array(blob.hexDigest.utf8), blocks: UInt32(blocks))
        }
        let uuid = Array(SHA256.hash(Array(seed.utf8)).prefix(16))
        return ImageTree(nodes: nodes, devices: devices, uuid: uuid, volumeName: Array("ferry".utf8))
    }

    private static func node(from source: MergedTree<FilePayload>.Node, entries: [DirectoryEntry], chunks: FileChunkTable,
                             chunkSizeLog2: UInt8) throws -> EROFS.Node {
        let content: NodeContent
        switch source.content {
        case .directory:
            content = .directory(entries: entries)
        case let .regular(size, payload):
            switch payload {
            case let .inline(bytes)?:
                content = .regular(size: UInt64(bytes.count), data: .inline(bytes))
            case let .chunked(file)?:
                content = .regular(size: UInt64(size), data: .chunked(chunkSizeLog2: chunkSizeLog2, chunks: chunks.rows[file]))
            case nil:
                content = .regular(size: 0, data: .inline([]))
            }
        case let .symlink(target):
            content = .symlink(target: target)
        case let .characterDevice(major, minor):
            content = .characterDevice(rdev: encodeDevice(major: major, minor: minor))
        case let .blockDevice(major, minor):
            content = .blockDevice(rdev: encodeDevice(major: major, minor: minor))
        case .fifo:
            content = .fifo
        }
        // Linux gives every symlink 0777 whatever the archive says (umoci and tar create them so).
        let permissions = content.isSymlink ? 0o777 : UInt16(source.mode & 0o7777)
        return EROFS.Node(content: content, permissions: permissions, uid: source.uid, gid: source.gid,
                          mtimeSeconds: source.mtimeSeconds, mtimeNanoseconds: source.mtimeNanoseconds,
                          xattrs: source.xattrs.map { EROFS.ExtendedAttribute(name: $0.name, value: $0.value) })
    }

    /// Linux's `new_encode_dev`: what EROFS stores in `i_u.rdev`.
    static func encodeDevice(major: UInt32, minor: UInt32) -> UInt32 {
        (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
    }
}

extension NodeContent {
    var isSymlink: Bool {
        if case .symlink = self { return true }
        return false
    }
}
