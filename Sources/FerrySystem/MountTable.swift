/// The mounts this process sees, read from `/proc/self/mounts` to its end.
///
/// procfs hands the table out one page per `read(2)`: Foundation's `String(contentsOfFile:)` and
/// `FileManager.contents(atPath:)` stop after the first (4,068 bytes of a 7,399-byte table on
/// this kernel), so on a node with more than a few dozen mounts every mount listed after the
/// first page looked absent — a restarted ferryd then did not re-attach them
/// (`MountTableTests`).
public struct MountTable: Sendable {
    /// One line of the table: the mount's source, where it is mounted and its filesystem type,
    /// with the kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`) decoded.
    public struct Entry: Sendable, Equatable {
        public var source: String
        public var mountpoint: String
        public var type: String
    }

    public let entries: [Entry]

    /// Reads the whole table of the calling process's mount namespace.
    public static func current() throws -> MountTable {
        try MountTable(text: readWholeFile("/proc/self/mounts"))
    }

    /// Parses the text of a `/proc/*/mounts` file.
    public init(text: String) {
        entries = text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count >= 3 else { return nil }
            return Entry(source: Self.unescape(fields[0]), mountpoint: Self.unescape(fields[1]), type: Self.unescape(fields[2]))
        }
    }

    /// The mountpoints of mounts of filesystem `type`.
    public func mountpoints(ofType type: String) -> Set<String> {
        Set(entries.lazy.filter { $0.type == type }.map(\.mountpoint))
    }

    /// Whether something is mounted at `path` (exactly that path, as the table spells it).
    public func contains(mountpoint path: String) -> Bool { entries.contains { $0.mountpoint == path } }

    /// Undoes the kernel's `mangle()`: a backslash and three octal digits stand for one byte.
    static func unescape(_ field: Substring) -> String {
        let bytes = Array(field.utf8)
        guard bytes.contains(UInt8(ascii: "\\")) else { return String(field) }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count {
                let digits = bytes[(i + 1)...(i + 3)]
                if digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") }) {
                    let value = digits.reduce(0) { $0 * 8 + Int($1 - UInt8(ascii: "0")) }
                    if value <= 0xFF {
                        out.append(UInt8(value))
                        i += 4
                        continue
                    }
                }
            }
            out.append(bytes[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Reads a file to its end with as many `read(2)` calls as it takes (procfs and sysfs files
/// report size 0 and return one page or one record per call).
public func readWholeFile(_ path: String) throws -> String {
    let fd = try FileDescriptor.open(path, .readOnly)
    defer { try? fd.close() }
    var bytes: [UInt8] = []
    while true {
        let chunk = try fd.read(upTo: 65536, partial: true)
        if chunk.isEmpty { break }
        bytes += chunk
    }
    return String(decoding: bytes, as: UTF8.self)
}
