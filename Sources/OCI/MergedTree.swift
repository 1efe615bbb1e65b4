/// The file tree of an image: its layers applied in order, OCI whiteouts resolved
/// (image-spec `layer.md`, "Representing Changes" and "Whiteouts").
///
/// Nodes live in `nodes`; index 0 is the root directory. A directory maps child names to node
/// indexes; two names holding the same index are hard links. Regular files carry a `Payload`
/// that the converter attaches (e.g. the file's chunk list). Nodes that a later layer replaced
/// stay in the array but are unreachable; walk the tree with `walk(_:)`.
public struct MergedTree<Payload: Sendable>: Sendable {
    /// What a node is.
    public enum Content: Sendable {
        case directory
        /// A regular file of `size` bytes; `payload` is what the converter passed to `apply`.
        case regular(size: Int64, payload: Payload?)
        case symlink(target: [UInt8])
        case characterDevice(major: UInt32, minor: UInt32)
        case blockDevice(major: UInt32, minor: UInt32)
        case fifo
    }

    /// One inode of the merged tree.
    public struct Node: Sendable {
        public var content: Content
        /// Children of a directory by name (empty for everything else).
        public var children: [[UInt8]: Int]
        /// Permission and set-id bits (low 12 bits).
        public var mode: UInt32
        public var uid: UInt32
        public var gid: UInt32
        public var mtimeSeconds: Int64
        public var mtimeNanoseconds: UInt32
        public var xattrs: [ExtendedAttribute]

        public var isDirectory: Bool {
            if case .directory = content { return true }
            return false
        }
    }

    /// All nodes ever created; index 0 is the root directory.
    public private(set) var nodes: [Node]
    /// Names the current layer in errors.
    private var layer = ""
    /// Directory entries written by the current layer (`parent` node, `name`): whiteouts of the
    /// same layer never remove them (image-spec: whiteouts apply to lower layers only).
    private var upper: Set<UpperEntry> = []

    private struct UpperEntry: Hashable {
        var parent: Int
        var name: [UInt8]
    }

    /// Mode, owner and time of directories that exist only because an entry lies below them.
    /// umoci creates them with mode 0777 &^ umask (0755), owned by the unpacking user (root) and
    /// stamped with the unpack time; Ferry uses the epoch instead so conversion is reproducible.
    public static var implicitDirectoryMode: UInt32 { 0o755 }

    /// An empty tree: a root directory 0755 root:root, mtime 0.
    public init() {
        nodes = [Node(content: .directory, children: [:], mode: Self.implicitDirectoryMode, uid: 0, gid: 0,
                      mtimeSeconds: 0, mtimeNanoseconds: 0, xattrs: [])]
    }

    /// The root directory's index.
    public static var root: Int { 0 }

    // MARK: - Layers

    /// Starts applying a layer; `name` (e.g. its digest) appears in errors.
    public mutating func beginLayer(name: String) {
        layer = name
        upper.removeAll(keepingCapacity: true)
    }

    /// Finishes the current layer.
    public mutating func endLayer() {
        upper.removeAll()
    }

    /// Applies one tar entry of the current layer. `payload` is stored on regular files.
    public mutating func apply(_ entry: TarEntry, payload: Payload? = nil) throws {
        guard let last = entry.path.last else {
            // The root itself ("./"): containerd skips every entry that resolves to the root
            // ("file ignored: resolved to root", archive/tar.go), so the root stays 0755
            // root:root whatever the layers say; umoci applies it. Ferry follows containerd.
            return
        }
        let whiteoutPrefix = Array(".wh.".utf8)
        if last.starts(with: whiteoutPrefix) {
            let name = Array(last.dropFirst(whiteoutPrefix.count))
            // ".wh..wh." names are reserved for markers; only the opaque one is defined.
            if name.starts(with: whiteoutPrefix), name != Array(".wh..opq".utf8) { return }
            try applyWhiteout(entry, name: name)
            return
        }
        let parent = try directory(for: entry.path.dropLast(), entry: entry, use: .entry)
        guard let parent else { return }
        let existing = nodes[parent].children[last]
        upper.insert(UpperEntry(parent: parent, name: last))

        switch entry.kind {
        case .directory:
            if let existing, nodes[existing].isDirectory {
                // A directory over a directory keeps the children and takes the new metadata.
                setMetadata(of: existing, from: entry)
                return
            }
            nodes[parent].children[last] = appendNode(.directory, from: entry)
        case .hardlink:
            let target = try resolveHardlink(entry)
            // Linking a name to the node it already names changes nothing.
            nodes[parent].children[last] = target
            // containerd chowns, chmods and stamps the new name (the shared inode) from the link
            // header and sets the xattrs it names; umoci ignores a link header's metadata.
            // Builders write the linked file's own metadata there, so only crafted layers differ.
            setLinkMetadata(of: target, from: entry)
        case .regular:
            nodes[parent].children[last] = appendNode(.regular(size: entry.size, payload: payload), from: entry)
        case .symlink:
            nodes[parent].children[last] = appendNode(.symlink(target: entry.symlinkTarget ?? []), from: entry)
        case .characterDevice:
            nodes[parent].children[last] = appendNode(.characterDevice(major: entry.deviceMajor, minor: entry.deviceMinor), from: entry)
        case .blockDevice:
            nodes[parent].children[last] = appendNode(.blockDevice(major: entry.deviceMajor, minor: entry.deviceMinor), from: entry)
        case .fifo:
            nodes[parent].children[last] = appendNode(.fifo, from: entry)
        }
    }

    /// Replaces the payload of a regular file (e.g. once its chunks are known); other nodes
    /// are left alone.
    public mutating func setPayload(_ payload: Payload?, of index: Int) {
        guard nodes.indices.contains(index), case let .regular(size, _) = nodes[index].content else { return }
        nodes[index].content = .regular(size: size, payload: payload)
    }

    // MARK: - Reading the tree

    /// The node a path names, without following symbolic links; nil when there is none.
    public func lookup(_ path: [[UInt8]]) -> Int? {
        var index = Self.root
        for name in path {
            guard nodes[index].isDirectory, let child = nodes[index].children[name] else { return nil }
            index = child
        }
        return index
    }

    /// Visits every directory entry depth-first, parents before children, children in byte
    /// order of their names; the root is visited first with an empty path. A hard-linked node is
    /// visited once per name. Return false from `visit` to skip a directory's children.
    public func walk(_ visit: (_ path: [[UInt8]], _ index: Int) throws -> Bool) rethrows {
        var stack: [([[UInt8]], Int)] = [([], Self.root)]
        while let (path, index) = stack.popLast() {
            guard try visit(path, index), nodes[index].isDirectory else { continue }
            let names = nodes[index].children.keys.sorted { $0.lexicographicallyPrecedes($1) }
            for name in names.reversed() {
                if let child = nodes[index].children[name] { stack.append((path + [name], child)) }
            }
        }
    }

    /// Number of directory entries naming each node (what `st_nlink` counts for non-directories;
    /// directories get 2 plus their subdirectories). Unreachable nodes have 0.
    public func linkCounts() -> [Int] {
        var counts = [Int](repeating: 0, count: nodes.count)
        walk { _, index in
            counts[index] += 1
            if nodes[index].isDirectory {
                counts[index] += 1
                for child in nodes[index].children.values where nodes[child].isDirectory { counts[index] += 1 }
            }
            return true
        }
        return counts
    }

    // MARK: - Whiteouts

    private mutating func applyWhiteout(_ entry: TarEntry, name: [UInt8]) throws {
        // Below a non-directory a whiteout hides nothing (umoci's repack writes a directory
        // replaced by a file as the file followed by whiteouts of the old children; umoci
        // ignores them, containerd refuses the layer). Missing directories are created first, as
        // containerd does (umoci creates nothing). Kernel-Notes/layers.md has the cases.
        guard let dir = try directory(for: entry.path.dropLast(), entry: entry, use: .whiteout) else { return }
        if name == Array(".wh..opq".utf8) {
            // Opaque: hide every child from lower layers, keep what this layer put there.
            for (child, _) in nodes[dir].children { removeLower(parent: dir, name: child) }
        } else {
            guard !name.isEmpty else {
                throw OCIError.malformedTar(layer: layer, entry: entry.displayPath, reason: "whiteout without a name")
            }
            removeLower(parent: dir, name: name)
        }
    }

    /// Removes what lower layers put at `parent`/`name`, keeping entries of the current layer
    /// and the directories that lead to them.
    private mutating func removeLower(parent: Int, name: [UInt8]) {
        guard let index = nodes[parent].children[name] else { return }
        let isUpper = upper.contains(UpperEntry(parent: parent, name: name))
        if nodes[index].isDirectory {
            // A lower directory may still hold entries this layer added below it.
            if isUpper || containsUpper(index) {
                for (child, _) in nodes[index].children { removeLower(parent: index, name: child) }
                if isUpper { return }
                if !nodes[index].children.isEmpty { return }
            }
            nodes[parent].children[name] = nil
        } else if !isUpper {
            nodes[parent].children[name] = nil
        }
    }

    private func containsUpper(_ dir: Int) -> Bool {
        for (name, child) in nodes[dir].children {
            if upper.contains(UpperEntry(parent: dir, name: name)) { return true }
            if nodes[child].isDirectory, containsUpper(child) { return true }
        }
        return false
    }

    // MARK: - Paths

    /// What a path's directory is wanted for, which decides what missing directories and
    /// non-directory components do.
    private enum PathUse {
        /// A new entry: missing directories are made; a non-directory is an error (ENOTDIR in
        /// both runtimes).
        case entry
        /// A whiteout: missing directories are made (containerd's `mkparent`); below a
        /// non-directory there is nothing to hide (nil).
        case whiteout
        /// A hard link's target: nil for anything missing.
        case lookup
    }

    /// The directory at `path`, following symbolic links in it (scoped to the root, as umoci's
    /// securejoin and containerd's `fs.RootPath` do). Missing directories are made with
    /// `implicitDirectoryMode`, root-owned, mtime 0, unless `use` is `.lookup`.
    private mutating func directory(for path: ArraySlice<[UInt8]>, entry: TarEntry, use: PathUse) throws -> Int? {
        var hops = 0
        var index = Self.root
        var stack: [Int] = []
        var pending = Array(path.reversed())
        while let name = pending.popLast() {
            if name == Array("..".utf8) {
                index = stack.popLast() ?? Self.root
                continue
            }
            guard let child = nodes[index].children[name] else {
                guard use != .lookup else { return nil }
                let made = appendNode(.directory, mode: Self.implicitDirectoryMode, uid: 0, gid: 0)
                nodes[index].children[name] = made
                upper.insert(UpperEntry(parent: index, name: name))
                stack.append(index)
                index = made
                continue
            }
            switch nodes[child].content {
            case .directory:
                stack.append(index)
                index = child
            case let .symlink(target):
                hops += 1
                guard hops <= 40 else {
                    throw OCIError.notADirectory(layer: layer, entry: entry.displayPath, component: "\(TarPath.display(Array(path))) (too many levels of symbolic links)")
                }
                if target.first == UInt8(ascii: "/") {
                    index = Self.root
                    stack = []
                }
                let parts = target.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true)
                    .filter { !$0.elementsEqual([UInt8(ascii: ".")]) }
                for part in parts.reversed() { pending.append(Array(part)) }
            default:
                guard use == .entry else { return nil }
                throw OCIError.notADirectory(layer: layer, entry: entry.displayPath, component: String(decoding: name, as: UTF8.self))
            }
        }
        return index
    }

    private mutating func resolveHardlink(_ entry: TarEntry) throws -> Int {
        let target = entry.hardlinkTarget ?? []
        let shown = TarPath.display(target)
        guard let name = target.last,
              let dir = try? directory(for: target.dropLast(), entry: entry, use: .lookup),
              let index = nodes[dir].children[name] else {
            throw OCIError.danglingHardlink(layer: layer, entry: entry.displayPath, target: shown)
        }
        if nodes[index].isDirectory {
            throw OCIError.hardlinkToDirectory(layer: layer, entry: entry.displayPath, target: shown)
        }
        return index
    }

    // MARK: - Nodes

    private mutating func appendNode(_ content: Content, from entry: TarEntry) -> Int {
        let index = appendNode(content, mode: entry.mode, uid: entry.uid, gid: entry.gid)
        setMetadata(of: index, from: entry)
        return index
    }

    private mutating func appendNode(_ content: Content, mode: UInt32, uid: UInt32, gid: UInt32) -> Int {
        nodes.append(Node(content: content, children: [:], mode: mode & 0o7777, uid: uid, gid: gid,
                          mtimeSeconds: 0, mtimeNanoseconds: 0, xattrs: []))
        return nodes.count - 1
    }

    private mutating func setMetadata(of index: Int, from entry: TarEntry) {
        nodes[index].mode = entry.mode & 0o7777
        nodes[index].uid = entry.uid
        nodes[index].gid = entry.gid
        (nodes[index].mtimeSeconds, nodes[index].mtimeNanoseconds) = Self.boundedTime(entry)
        nodes[index].xattrs = entry.xattrs.filter { Self.isApplied($0, to: nodes[index].content) }
    }

    /// A hard-link entry's metadata on the node it names: as `setMetadata`, but xattrs the
    /// header does not name stay (containerd only sets, never removes).
    private mutating func setLinkMetadata(of index: Int, from entry: TarEntry) {
        let kept = nodes[index].xattrs
        setMetadata(of: index, from: entry)
        let named = Set(nodes[index].xattrs.map(\.name))
        nodes[index].xattrs = kept.filter { !named.contains($0.name) } + nodes[index].xattrs
    }

    /// containerd's `boundTime` (archive/time.go): an mtime before the epoch or after the
    /// largest time `os.Chtimes` takes (2^63-1 ns, in 2262) becomes the epoch. umoci keeps
    /// times before 1970.
    static func boundedTime(_ entry: TarEntry) -> (seconds: Int64, nanoseconds: UInt32) {
        let maxSeconds: Int64 = Int64.max / 1_000_000_000, maxNanoseconds = UInt32(Int64.max % 1_000_000_000)
        if entry.mtimeSeconds < 0 || entry.mtimeSeconds > maxSeconds
            || (entry.mtimeSeconds == maxSeconds && entry.mtimeNanoseconds > maxNanoseconds) {
            return (0, 0)
        }
        return (entry.mtimeSeconds, entry.mtimeNanoseconds)
    }

    /// Whether containerd's applier sets `xattr` (archive/tar.go `createTarFile`, tar_unix.go
    /// `setxattr`): never `trusted.*` ("admin attributes from archive not supported"; they would
    /// steer overlayfs, e.g. `trusted.overlay.*`), and `user.*` only on regular files and
    /// directories (the kernel refuses it elsewhere and containerd skips it). umoci keeps
    /// `trusted.*`.
    static func isApplied(_ xattr: ExtendedAttribute, to content: Content) -> Bool {
        if xattr.name.starts(with: "trusted.".utf8) { return false }
        if xattr.name.starts(with: "user.".utf8) {
            switch content {
            case .directory, .regular: return true
            default: return false
            }
        }
        return true
    }
}
