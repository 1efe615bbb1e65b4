/// How one node becomes an inode: which inode form, which data layout, how many bytes sit
/// inline after it and how many whole blocks it needs in the metadata data region.
struct NodePlan {
    var extended = false
    /// The encoded inline xattr area (`erofs_xattr_ibody_header` + entries), or empty.
    var xattrBody: [UInt8] = []
    var layout: DataLayoutKind = .flatPlain
    var size: UInt64 = 0
    /// Bytes of tail data stored right after inode + xattrs (`EROFS_INODE_FLAT_INLINE`).
    var inlineTail = 0
    /// Whole blocks of data this node owns in the metadata area's data region.
    var ownedBlocks = 0
    /// Chunk indexes that follow the inode (`EROFS_INODE_CHUNK_BASED`).
    var chunkCount = 0
    /// Set during placement.
    var nid: UInt64 = 0
    /// Absolute block address of the first owned block, set during placement.
    var firstOwnedBlock: UInt32 = 0

    var inodeSize: Int { extended ? ExtendedInode.size : CompactInode.size }
    /// Bytes that must stay inside one block when they fit in one: inode, xattrs, inline tail.
    var headSize: Int { inodeSize + xattrBody.count + inlineTail }
}

/// Most common (mtime seconds, nanoseconds) among the nodes, ties broken towards the
/// earliest: the superblock build time that lets the most inodes be compact.
func dominantTimestamp(_ nodes: [Node]) -> (seconds: Int64, nanoseconds: UInt32) {
    struct Stamp: Hashable {
        var seconds: Int64
        var nanoseconds: UInt32
    }
    var counts = [Stamp: Int]()
    for node in nodes {
        counts[Stamp(seconds: node.mtimeSeconds, nanoseconds: node.mtimeNanoseconds), default: 0] += 1
    }
    var best = Stamp(seconds: 0, nanoseconds: 0)
    var bestCount = -1
    for (stamp, count) in counts {
        if count > bestCount || (count == bestCount && (stamp.seconds, stamp.nanoseconds) < (best.seconds, best.nanoseconds)) {
            best = stamp
            bestCount = count
        }
    }
    return (best.seconds, best.nanoseconds)
}

/// Encodes a node's xattrs as the inline xattr area, in the order given.
func encodeXattrBody(_ xattrs: [ExtendedAttribute], node: Int) throws -> [UInt8] {
    guard !xattrs.isEmpty else { return [] }
    var body = XattrBodyHeader().encoded()
    var names = Set<[UInt8]>()
    for xattr in xattrs {
        guard names.insert(xattr.name).inserted else {
            throw EROFSError.invalidTree(node: node, reason: "duplicate extended attribute '\(printable(xattr.name))'")
        }
        guard let (prefix, suffix) = XattrPrefix.split(xattr.name) else {
            throw EROFSError.unknownXattrPrefix(node: node, name: xattr.name)
        }
        guard suffix.count <= 255, !suffix.contains(0) else {
            throw EROFSError.invalidTree(node: node, reason: "extended attribute name '\(printable(xattr.name))' "
                                             + "is longer than 255 bytes after its prefix or contains NUL")
        }
        guard xattr.value.count <= Int(UInt16.max) else {
            throw EROFSError.invalidTree(node: node, reason: "value of '\(printable(xattr.name))' is "
                                             + "\(xattr.value.count) bytes (at most 65535)")
        }
        let header = XattrEntryHeader(nameLength: UInt8(suffix.count), nameIndex: prefix.rawValue,
                                      valueSize: UInt16(xattr.value.count))
        body += header.encoded()
        body += suffix
        body += xattr.value
        body += [UInt8](repeating: 0, count: roundUp(body.count, 4) - body.count)
    }
    // i_xattr_icount is 16 bits: 1 + (size - 12) / 4.
    guard (body.count - XattrBodyHeader.size) / 4 + 1 <= Int(UInt16.max) else {
        throw EROFSError.invalidTree(node: node, reason: "extended attributes take \(body.count) bytes (at most 262148)")
    }
    return body
}

extension NodePlan {
    /// Plans a node whose inode form and xattrs are decided; `size` is its data size and
    /// `inlinable` says whether its data may be tail-packed (directories, symlinks, inline files).
    mutating func planFlatData(size: UInt64) {
        self.size = size
        let blockSize = UInt64(Layout.blockSize)
        let tail = Int(size % blockSize)
        let full = Int(size / blockSize)
        if size == 0 {
            layout = .flatPlain
        } else if tail > 0, inodeSize + xattrBody.count + tail <= Layout.blockSize {
            layout = .flatInline
            inlineTail = tail
            ownedBlocks = full
        } else {
            layout = .flatPlain
            ownedBlocks = full + (tail > 0 ? 1 : 0)
        }
    }
}
