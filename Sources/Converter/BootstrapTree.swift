import EROFS

/// Reads a bootstrap back into the writer's model, for `ferry export` (which re-lays it out
/// self-contained) and for checks that walk every inode.
enum BootstrapTree {
    /// The tree of `reader`'s image; regular files keep their layout (chunk references or inline bytes).
    static func read(_ reader: ImageReader) throws -> ImageTree {
        var index: [UInt64: Int] = [:]
        var nodes: [Node] = []
        var queue: [(nid: UInt64, slot: Int)] = []
        func slot(for nid: UInt64) -> Int {
            if let known = index[nid] { return known }
            let n = nodes.count
            index[nid] = n
            nodes.append(Node(content: .fifo, permissions: 0))
            queue.append((nid, n))
            return n
        }
        _ = slot(for: reader.rootNid)
        var cursor = 0
        while cursor < queue.count {
            let (nid, n) = queue[cursor]
            cursor += 1
            let inode = try reader.inode(nid: nid)
            let content: NodeContent
            switch inode.type {
            case .directory:
                let entries = try reader.entries(of: inode).filter { !$0.isDotOrDotDot }.map {
                    DirectoryEntry(name: $0.name, node: slot(for: $0.nid))
                }
                content = .directory(entries: entries)
            case .regular:
                switch inode.layout {
                case let .chunked(log2, _, _, _):
                    content = .regular(size: inode.size, data: .chunked(chunkSizeLog2: log2, chunks: try reader.chunks(of: inode)))
                default:
                    content = .regular(size: inode.size, data: .inline(try reader.contents(of: inode) { _, _, _ in
                        throw EROFSError.corrupt(what: "inode \(inode.nid)", reason: "inline file refers to a device")
                    }))
                }
            case .symlink: content = .symlink(target: try reader.symlinkTarget(inode))
            case .characterDevice: content = .characterDevice(rdev: inode.rdev)
            case .blockDevice: content = .blockDevice(rdev: inode.rdev)
            case .fifo: content = .fifo
            case .socket: content = .socket
            }
            nodes[n] = Node(content: content, permissions: inode.permissions, uid: inode.uid, gid: inode.gid,
                            mtimeSeconds: inode.mtimeSeconds, mtimeNanoseconds: inode.mtimeNanoseconds, xattrs: inode.xattrs)
        }
        return ImageTree(nodes: nodes, devices: reader.devices, uuid: reader.superBlock.uuid, volumeName: Array(reader.superBlock.volumeName.prefix(while: { $0 != 0 })))
    }
}
