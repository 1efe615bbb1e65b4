internal import CFerry

/// Everything `lstat` says about one file that Ferry's correctness checks compare.
public struct FileStatus: Sendable, Hashable {
    /// Full `st_mode`: file type and permission bits.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var mtimeSeconds: Int64
    public var mtimeNanoseconds: UInt32
    public var inode: UInt64
    public var device: UInt64
    public var rdevMajor: UInt32
    public var rdevMinor: UInt32
    public var linkCount: UInt64

    /// The file-type bits (`S_IFMT`).
    public var type: UInt32 { mode & 0o170000 }
    public var isDirectory: Bool { type == 0o040000 }
    public var isRegular: Bool { type == 0o100000 }
    public var isSymlink: Bool { type == 0o120000 }
}

/// Calls on paths given as raw bytes, so names that are not valid UTF-8 pass through unchanged.
/// Used by tests and tools that compare whole trees (a mounted image against `umoci unpack`).
public enum RawPath {
    /// `lstat(2)`.
    public static func status(_ path: [UInt8]) throws -> FileStatus {
        var st = stat()
        _ = try withCString(path) { p in try retrying("lstat \(display(path))") { lstat(p, &st) } }
        return FileStatus(mode: st.st_mode, uid: st.st_uid, gid: st.st_gid, size: UInt64(st.st_size),
                          mtimeSeconds: Int64(st.st_mtim.tv_sec), mtimeNanoseconds: UInt32(st.st_mtim.tv_nsec),
                          inode: UInt64(st.st_ino), device: UInt64(st.st_dev),
                          rdevMajor: cferry_major(st.st_rdev), rdevMinor: cferry_minor(st.st_rdev), linkCount: UInt64(st.st_nlink))
    }

    /// Names in a directory, without "." and "..", sorted bytewise.
    public static func list(_ path: [UInt8]) throws -> [[UInt8]] {
        guard let dir = withCString(path, { opendir($0) }) else {
            throw SystemError.syscall("opendir \(display(path))", errno: cferry_errno())
        }
        defer { closedir(dir) }
        var names: [[UInt8]] = []
        while let entry = readdir(dir) {
            // Safe because: d_name is a NUL-terminated array inside the dirent readdir returned.
            let name = withUnsafeBytes(of: &entry.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
            if name == [0x2e] || name == [0x2e, 0x2e] { continue }
            names.append(name)
        }
        return names.sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// `readlink(2)`.
    public static func linkTarget(_ path: [UInt8]) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = try withCString(path) { p in
            try buffer.withUnsafeMutableBytes { dst in
                // Safe because: readlink writes at most dst.count bytes.
                try retrying("readlink \(display(path))") { readlink(p, dst.baseAddress!.assumingMemoryBound(to: CChar.self), dst.count) }
            }
        }
        return Array(buffer[0..<n])
    }

    /// Every extended attribute (name → value) of the file itself (not following symlinks).
    public static func extendedAttributes(_ path: [UInt8]) throws -> [[UInt8]: [UInt8]] {
        try withCString(path) { p in
            let size = try retrying("llistxattr \(display(path))") { llistxattr(p, nil, 0) }
            guard size > 0 else { return [:] }
            var names = [UInt8](repeating: 0, count: size)
            let got = try names.withUnsafeMutableBytes { dst in
                // Safe because: llistxattr writes at most dst.count bytes.
                try retrying("llistxattr \(display(path))") { llistxattr(p, dst.baseAddress?.assumingMemoryBound(to: CChar.self), dst.count) }
            }
            var result: [[UInt8]: [UInt8]] = [:]
            for name in names[0..<got].split(separator: 0) {
                let nameBytes = Array(name)
                let valueSize = try withCString(nameBytes) { n in try retrying("lgetxattr \(display(path))") { lgetxattr(p, n, nil, 0) } }
                var value = [UInt8](repeating: 0, count: valueSize)
                let valueGot = try withCString(nameBytes) { n in
                    try value.withUnsafeMutableBytes { dst in
                        // Safe because: lgetxattr writes at most dst.count bytes.
                        try retrying("lgetxattr \(display(path))") { lgetxattr(p, n, dst.baseAddress, dst.count) }
                    }
                }
                result[nameBytes] = Array(value[0..<valueGot])
            }
            return result
        }
    }

    /// Reads a whole regular file.
    public static func contents(_ path: [UInt8]) throws -> [UInt8] {
        let fd = try withCString(path) { p in try retrying("open \(display(path))") { cferry_open(p, O_RDONLY | O_CLOEXEC, 0) } }
        let file = FileDescriptor(rawValue: fd, name: display(path))
        defer { try? file.close() }
        var out: [UInt8] = []
        while true {
            let piece = try file.read(upTo: 1 << 20)
            if piece.isEmpty { break }
            out += piece
        }
        return out
    }

    /// A printable form of a raw path (invalid UTF-8 shown as U+FFFD).
    public static func display(_ path: [UInt8]) -> String { String(decoding: path, as: UTF8.self) }

    static func withCString<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        let terminated = bytes + [0]
        return try terminated.withUnsafeBufferPointer { buffer in
            // Safe because: the buffer is NUL-terminated and lives for the closure's duration.
            try buffer.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
        }
    }
}
