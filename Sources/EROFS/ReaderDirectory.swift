/// One directory entry as stored: name bytes, target nid and `FT_*` type.
public struct DirectoryRecord: Sendable, Hashable {
    public var name: [UInt8]
    public var nid: UInt64
    /// The raw `file_type` byte; `type` is its decoded form (nil for FT_UNKNOWN or bogus).
    public var fileTypeCode: UInt8
    public var type: FileType? { FileType(rawValue: fileTypeCode) }
    /// True for "." and "..".
    public var isDotOrDotDot: Bool { name == [0x2E] || name == [0x2E, 0x2E] }
}

extension ImageReader {
    /// All entries of a directory in on-disk order, "." and ".." included. Validates each
    /// block like `erofs_readdir` (name offsets, name lengths 1...255).
    public func entries(of directory: Inode) throws -> [DirectoryRecord] {
        guard directory.type == .directory else { throw EROFSError.notADirectory(path: "nid \(directory.nid)") }
        let what = "directory nid \(directory.nid)"
        guard directory.size <= source.size else {
            throw EROFSError.corrupt(what: what, reason: "size \(directory.size) exceeds the image size")
        }
        let data = try read(directory, offset: 0, count: Int(directory.size)) { _, _, _ in
            throw EROFSError.unsupported(what: "\(what) stores its entries on an extra device")
        }
        var records = [DirectoryRecord]()
        var blockStart = 0
        while blockStart < data.count {
            let used = min(blockSize, data.count - blockStart)
            guard used >= Dirent.size else {
                throw EROFSError.corrupt(what: what, reason: "block at \(blockStart) holds only \(used) bytes")
            }
            let first = try Dirent.decode(data, at: blockStart)
            let namesStart = Int(first.nameOffset)
            guard namesStart > 0, namesStart < used, namesStart % Dirent.size == 0 else {
                throw EROFSError.corrupt(what: what, reason: "first name offset \(namesStart) in block at \(blockStart)")
            }
            let count = namesStart / Dirent.size
            var dirents = [Dirent]()
            dirents.reserveCapacity(count)
            for slot in 0..<count { dirents.append(try Dirent.decode(data, at: blockStart + slot * Dirent.size)) }
            for slot in 0..<count {
                let start = Int(dirents[slot].nameOffset)
                var end: Int
                if slot + 1 < count {
                    end = Int(dirents[slot + 1].nameOffset)
                } else {
                    end = start
                    while end < used, data[blockStart + end] != 0 { end += 1 }
                }
                guard start >= namesStart, start < end, end <= used, end - start <= Layout.maxNameLength else {
                    throw EROFSError.corrupt(what: what, reason: "bogus name bounds \(start)..<\(end) of dirent \(slot) "
                                                 + "in block at \(blockStart)")
                }
                records.append(DirectoryRecord(name: Array(data[blockStart + start..<blockStart + end]),
                                               nid: dirents[slot].nid, fileTypeCode: dirents[slot].fileType))
            }
            blockStart += blockSize
        }
        return records
    }

    /// The inode named `name` in `directory`, or nil.
    public func lookup(_ name: [UInt8], in directory: Inode) throws -> Inode? {
        guard let record = try entries(of: directory).first(where: { $0.name == name }) else { return nil }
        return try inode(nid: record.nid)
    }

    /// The inode at an absolute or root-relative path ("/a/b", "a/b", "/"), following no
    /// symlinks. Components are raw bytes split at "/".
    public func lookup(path: [UInt8]) throws -> Inode {
        var current = try rootInode()
        var walked: [UInt8] = []
        for component in path.split(separator: 0x2F) where !component.isEmpty {
            guard current.type == .directory else {
                throw EROFSError.notADirectory(path: walked.isEmpty ? "/" : printable(walked))
            }
            walked += [0x2F] + component
            guard let next = try lookup(Array(component), in: current) else {
                throw EROFSError.notFound(path: printable(walked))
            }
            current = next
        }
        return current
    }

    /// `lookup(path:)` for a UTF-8 path.
    public func lookup(path: String) throws -> Inode {
        try lookup(path: Array(path.utf8))
    }

    /// Visits every inode reachable from the root, depth first in on-disk entry order, with
    /// its path ("/" for the root, "/a/b" below it). A hard-linked inode is visited once per
    /// name. Throws `corrupt` if a directory is reachable twice (a cycle).
    public func walk(_ visit: (_ path: [UInt8], _ inode: Inode) throws -> Void) throws {
        try walk(fromNid: rootNid, path: [0x2F], visit)
    }

    /// Like `walk(_:)`, from the directory (or file) `start` whose path is `path`.
    public func walk(from start: Inode, path: [UInt8], _ visit: (_ path: [UInt8], _ inode: Inode) throws -> Void) throws {
        try walk(fromNid: start.nid, path: path, visit)
    }

    private func walk(fromNid: UInt64, path startPath: [UInt8], _ visit: (_ path: [UInt8], _ inode: Inode) throws -> Void) throws {
        var stack: [([UInt8], UInt64)] = [(startPath, fromNid)]
        var seenDirectories = Set<UInt64>()
        while let (path, nid) = stack.popLast() {
            let inode = try inode(nid: nid)
            try visit(path, inode)
            guard inode.type == .directory else { continue }
            guard seenDirectories.insert(nid).inserted else {
                throw EROFSError.corrupt(what: "directory nid \(nid)", reason: "reachable twice (directory cycle)")
            }
            let prefix = path == [0x2F] ? [] : path
            for record in try entries(of: inode).reversed() where !record.isDotOrDotDot {
                stack.append((prefix + [0x2F] + record.name, record.nid))
            }
        }
    }
}
