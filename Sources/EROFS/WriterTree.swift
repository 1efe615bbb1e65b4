/// The checked shape of an `ImageTree`: breadth-first order, parents, sorted dirents and
/// link counts. Building it validates every rule the writer relies on, so the later phases
/// can index without checks.
struct WriterTree {
    /// One directory entry as it will be written, "." and ".." included.
    struct Entry {
        var name: [UInt8]
        var node: Int
    }

    /// Node indices in inode order: breadth-first from the root, children by name. The root
    /// comes first so its nid is small enough for the 16-bit `root_nid`.
    var order: [Int] = []
    /// For directories: all entries sorted bytewise by name (`namei.c` binary-searches).
    var entries: [[Entry]]
    /// `i_nlink`: dirents naming the node; 2 + subdirectories for directories.
    var linkCount: [UInt32]

    init(_ tree: ImageTree) throws {
        let nodes = tree.nodes
        guard !nodes.isEmpty else { throw EROFSError.invalidTree(node: 0, reason: "the tree has no nodes") }
        guard case .directory = nodes[0].content else {
            throw EROFSError.invalidTree(node: 0, reason: "nodes[0] must be the root directory")
        }
        entries = [[Entry]](repeating: [], count: nodes.count)
        linkCount = [UInt32](repeating: 0, count: nodes.count)
        var parent = [Int](repeating: -1, count: nodes.count)
        var seen = [Bool](repeating: false, count: nodes.count)
        parent[0] = 0
        seen[0] = true
        order.reserveCapacity(nodes.count)
        order.append(0)
        var cursor = 0
        while cursor < order.count {
            let directory = order[cursor]
            cursor += 1
            guard case let .directory(children) = nodes[directory].content else { continue }
            var list = [Entry]()
            list.reserveCapacity(children.count + 2)
            list.append(Entry(name: [0x2E], node: directory))
            list.append(Entry(name: [0x2E, 0x2E], node: parent[directory]))
            var subdirectories: UInt32 = 0
            for child in children {
                try Self.checkName(child.name, in: directory)
                guard child.node >= 0, child.node < nodes.count else {
                    throw EROFSError.invalidTree(node: directory,
                                                 reason: "entry '\(printable(child.name))' names node \(child.node), "
                                                     + "outside 0..<\(nodes.count)")
                }
                if case .directory = nodes[child.node].content {
                    guard !seen[child.node] else {
                        throw EROFSError.invalidTree(node: child.node,
                                                     reason: "directory is named by more than one entry "
                                                         + "(directory hard links and cycles are not allowed)")
                    }
                    parent[child.node] = directory
                    subdirectories += 1
                } else {
                    linkCount[child.node] += 1
                }
                list.append(Entry(name: child.name, node: child.node))
                if !seen[child.node] {
                    seen[child.node] = true
                    order.append(child.node)
                }
            }
            list.sort { $0.name.lexicographicallyPrecedes($1.name) }
            for index in list.indices.dropFirst() where list[index].name == list[index - 1].name {
                throw EROFSError.invalidTree(node: directory,
                                             reason: "duplicate entry name '\(printable(list[index].name))'")
            }
            entries[directory] = list
            linkCount[directory] = 2 + subdirectories
        }
        if let orphan = seen.firstIndex(of: false) {
            throw EROFSError.invalidTree(node: orphan, reason: "node is not reachable from the root directory")
        }
    }

    private static func checkName(_ name: [UInt8], in directory: Int) throws {
        guard (1...Layout.maxNameLength).contains(name.count) else {
            throw EROFSError.invalidTree(node: directory,
                                         reason: "entry name of \(name.count) bytes (must be 1...255)")
        }
        guard !name.contains(0), !name.contains(0x2F) else {
            throw EROFSError.invalidTree(node: directory,
                                         reason: "entry name '\(printable(name))' contains '/' or NUL")
        }
        guard name != [0x2E], name != [0x2E, 0x2E] else {
            throw EROFSError.invalidTree(node: directory, reason: "entries must not include '.' or '..'")
        }
    }
}
