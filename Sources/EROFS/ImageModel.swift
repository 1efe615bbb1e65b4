/// The in-memory description of a filesystem tree that `ImageWriter` lays out as EROFS.
///
/// The model is independent of where the tree came from (OCI layers, a directory). Nodes live
/// in one array and refer to each other by index, so hard links are simply two directory
/// entries naming the same node. `nlink` is derived by the writer from the entries.

/// A reference to one chunk of a chunk-based file: which device holds it, and at which
/// 4 KiB block of that device's address space the chunk starts.
///
/// Device 0 is the image itself; devices 1...N are the extra devices of the device table
/// (`struct erofs_deviceslot`), i.e. Ferry's data blobs.
public enum ChunkReference: Sendable, Hashable {
    /// The chunk is stored at `block` (in 4 KiB units) of device `device`.
    case stored(device: UInt16, block: UInt32)
    /// The chunk is all zeroes and stored nowhere (`EROFS_NULL_ADDR`).
    case hole
}

/// Where a regular file's bytes are.
public enum FileData: Sendable, Hashable {
    /// The whole content is stored in the metadata area, tail-packed right after the inode
    /// (`EROFS_INODE_FLAT_INLINE`). Only for small files: the writer keeps them within one block.
    case inline([UInt8])
    /// The content is cut into chunks of `1 << chunkSizeLog2` bytes (4 KiB...16 MiB); chunk `i`
    /// covers bytes `[i << chunkSizeLog2, (i+1) << chunkSizeLog2)` (`EROFS_INODE_CHUNK_BASED`
    /// with `EROFS_CHUNK_FORMAT_INDEXES`).
    case chunked(chunkSizeLog2: UInt8, chunks: [ChunkReference])
    /// The content lies contiguously in the image itself, starting at `block` (in 4 KiB units)
    /// (`EROFS_INODE_FLAT_PLAIN`). Used by `ferry export`.
    case contiguous(block: UInt32)
}

/// What kind of object a node is and the type-specific payload.
public enum NodeContent: Sendable, Hashable {
    /// A directory; `entries` excludes "." and "..", which the writer adds. Names are raw bytes
    /// (not necessarily UTF-8), each 1...255 bytes and without "/" or NUL; the writer sorts them.
    case directory(entries: [DirectoryEntry])
    /// A regular file of `size` bytes whose bytes are described by `data`.
    case regular(size: UInt64, data: FileData)
    /// A symbolic link whose target is the given bytes.
    case symlink(target: [UInt8])
    /// A character device with the Linux-encoded device number (`new_encode_dev`).
    case characterDevice(rdev: UInt32)
    /// A block device with the Linux-encoded device number (`new_encode_dev`).
    case blockDevice(rdev: UInt32)
    /// A named pipe.
    case fifo
    /// A Unix domain socket.
    case socket
}

/// One entry of a directory: a name and the index of the node it names.
public struct DirectoryEntry: Sendable, Hashable {
    public var name: [UInt8]
    public var node: Int
    public init(name: [UInt8], node: Int) {
        self.name = name
        self.node = node
    }
}

/// One extended attribute: full name (e.g. `user.foo`, `security.capability`) and value.
public struct ExtendedAttribute: Sendable, Hashable {
    public var name: [UInt8]
    public var value: [UInt8]
    public init(name: [UInt8], value: [UInt8]) {
        self.name = name
        self.value = value
    }
}

/// One filesystem object. `permissions` holds the low 12 bits of `st_mode` (rwx, setuid,
/// setgid, sticky); the file-type bits come from `content`.
public struct Node: Sendable, Hashable {
    public var content: NodeContent
    public var permissions: UInt16
    public var uid: UInt32
    public var gid: UInt32
    /// Modification time: seconds since the epoch (may be negative) and nanoseconds.
    public var mtimeSeconds: Int64
    public var mtimeNanoseconds: UInt32
    public var xattrs: [ExtendedAttribute]

    public init(content: NodeContent, permissions: UInt16, uid: UInt32 = 0, gid: UInt32 = 0,
                mtimeSeconds: Int64 = 0, mtimeNanoseconds: UInt32 = 0, xattrs: [ExtendedAttribute] = []) {
        self.content = content
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.mtimeSeconds = mtimeSeconds
        self.mtimeNanoseconds = mtimeNanoseconds
        self.xattrs = xattrs
    }
}

/// One extra device of the image (`struct erofs_deviceslot`, 128 bytes).
public struct DeviceSlot: Sendable, Hashable {
    /// Up to 64 bytes; Ferry uses the 64 hex digits of the blob's SHA-256. The fscache backend
    /// uses it as the cookie key of the device.
    public var tag: [UInt8]
    /// The device's size in 4 KiB blocks.
    public var blocks: UInt32
    public init(tag: [UInt8], blocks: UInt32) {
        self.tag = tag
        self.blocks = blocks
    }
}

/// A whole filesystem tree ready to be written: `nodes[0]` is the root directory. Every node
/// must be reachable from the root, and each directory other than the root must be named by
/// exactly one entry (no directory hard links); the writer throws `EROFSError.invalidTree`
/// otherwise.
public struct ImageTree: Sendable {
    public var nodes: [Node]
    /// Extra devices, in device-id order (device id 1 is `devices[0]`).
    public var devices: [DeviceSlot]
    /// Number of 4 KiB blocks at the start of the image reserved for contiguous file data
    /// (`FileData.contiguous` addresses blocks 1 ..< 1 + dataBlocks; block 0 holds the superblock).
    /// Metadata starts after them. 0 for a bootstrap.
    public var dataBlocks: UInt32
    /// The 16-byte filesystem UUID. All zeroes (the default) makes the writer derive one from
    /// the image content, so equal trees still give equal bytes.
    public var uuid: [UInt8]
    /// The volume name: at most 15 bytes without NUL (Linux 6.1 needs a NUL inside the
    /// 16-byte field).
    public var volumeName: [UInt8]

    public init(nodes: [Node], devices: [DeviceSlot] = [], dataBlocks: UInt32 = 0,
                uuid: [UInt8] = [UInt8](repeating: 0, count: 16), volumeName: [UInt8] = []) {
        self.nodes = nodes
        self.devices = devices
        self.dataBlocks = dataBlocks
        self.uuid = uuid
        self.volumeName = volumeName
    }
}
