/// An extended attribute: raw name bytes (e.g. `user.comment`, `security.capability`) and value.
public struct ExtendedAttribute: Sendable, Hashable {
    public var name: [UInt8]
    public var value: [UInt8]

    public init(name: [UInt8], value: [UInt8]) {
        self.name = name
        self.value = value
    }

    /// Convenience for UTF-8 names and values.
    public init(_ name: String, _ value: [UInt8]) {
        self.init(name: Array(name.utf8), value: value)
    }
}

/// One member of a layer tar, with every extension (GNU long names, PAX records) applied.
public struct TarEntry: Sendable, Hashable {
    /// What the entry creates.
    public enum Kind: Sendable, Hashable {
        /// Type '0', '\0' (old tar) or '7' (contiguous file).
        case regular
        /// Type '1': another name for an earlier entry (`hardlinkTarget`).
        case hardlink
        /// Type '2': a symbolic link to `symlinkTarget`.
        case symlink
        /// Type '3'.
        case characterDevice
        /// Type '4'.
        case blockDevice
        /// Type '5'.
        case directory
        /// Type '6'.
        case fifo
    }

    public var kind: Kind
    /// The path as components below the image root ("./" and empty components removed); empty
    /// for the root directory itself. Components are raw bytes: tar names need not be UTF-8.
    public var path: [[UInt8]]
    /// For `.hardlink`: the target's path components, normalized like `path`.
    public var hardlinkTarget: [[UInt8]]?
    /// For `.symlink`: the target exactly as stored (it is data, never resolved here).
    public var symlinkTarget: [UInt8]?
    /// Permission and set-id bits (the low 12 bits of the tar mode field).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Modification time, seconds since the epoch (may be negative).
    public var mtimeSeconds: Int64
    /// Fractional part of the modification time (PAX `mtime` only), 0..<1_000_000_000.
    public var mtimeNanoseconds: UInt32
    /// Bytes of data that follow the header (regular files only; 0 for the others).
    public var size: Int64
    public var deviceMajor: UInt32
    public var deviceMinor: UInt32
    /// From PAX `SCHILY.xattr.*` and `LIBARCHIVE.xattr.*` records, in archive order, one per name.
    public var xattrs: [ExtendedAttribute]

    public init(kind: Kind, path: [[UInt8]], hardlinkTarget: [[UInt8]]? = nil, symlinkTarget: [UInt8]? = nil,
                mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0, mtimeSeconds: Int64 = 0,
                mtimeNanoseconds: UInt32 = 0, size: Int64 = 0, deviceMajor: UInt32 = 0, deviceMinor: UInt32 = 0,
                xattrs: [ExtendedAttribute] = []) {
        self.kind = kind
        self.path = path
        self.hardlinkTarget = hardlinkTarget
        self.symlinkTarget = symlinkTarget
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtimeSeconds = mtimeSeconds
        self.mtimeNanoseconds = mtimeNanoseconds
        self.size = size
        self.deviceMajor = deviceMajor
        self.deviceMinor = deviceMinor
        self.xattrs = xattrs
    }

    /// The path for messages ("/" for the root; invalid UTF-8 shown with replacement characters).
    public var displayPath: String { TarPath.display(path) }
}

/// Tar path normalization and display.
public enum TarPath {
    /// Splits a tar name into components: drops empty and "." components (so "./a//b/" is
    /// ["a", "b"]); rejects ".." anywhere and absolute names, which could escape the root.
    public static func normalize(_ raw: [UInt8], layer: String) throws -> [[UInt8]] {
        let text = String(decoding: raw, as: UTF8.self)
        if raw.first == UInt8(ascii: "/") {
            throw OCIError.unsafePath(layer: layer, entry: text, reason: "absolute path")
        }
        var components = [[UInt8]]()
        for part in raw.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if part.elementsEqual([UInt8(ascii: ".")]) { continue }
            if part.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                throw OCIError.unsafePath(layer: layer, entry: text, reason: "\"..\" component")
            }
            components.append(Array(part))
        }
        return components
    }

    /// Components joined with "/" for messages; "/" for the root.
    public static func display(_ components: [[UInt8]]) -> String {
        components.isEmpty ? "/" : components.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
    }
}
