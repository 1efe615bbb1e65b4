// timespec's initializer is seen through CoreFoundation under MemberImportVisibility (a clean build failed without it).
import CoreFoundation
import FerrySystem
import Foundation
import Glibc

/// SplitMix64: a tiny seeded generator, so a stack is reproducible from (seed, index) alone.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One change a build step makes to a rootfs; a layer is the diff `umoci repack` computes after
/// a list of them. Paths are relative to the rootfs. Applying is tolerant (a change whose path
/// no longer fits is skipped), so a shrinker may drop changes and replay the rest.
enum LayerChange: Sendable, CustomStringConvertible {
    /// A regular file of `size` bytes of pattern `fill`; `holeAt` leaves a hole (sparse file)
    /// from that offset up to the last 4 KiB.
    case file(String, size: Int, fill: UInt8, holeAt: Int?)
    case directory(String)
    case symlink(String, target: String)
    case hardlink(String, to: String)
    case device(String, character: Bool, major: UInt32, minor: UInt32)
    case fifo(String)
    /// Deletes whatever is there (a directory with its subtree).
    case remove(String)
    case chmod(String, UInt32)
    case chown(String, uid: UInt32, gid: UInt32)
    case xattr(String, name: String, value: String?)
    case mtime(String, seconds: Int64)

    var description: String {
        switch self {
        case let .file(p, size, fill, hole): ".file(\"\(p)\", size: \(size), fill: \(fill), holeAt: \(hole.map(String.init) ?? "nil"))"
        case let .directory(p): ".directory(\"\(p)\")"
        case let .symlink(p, t): ".symlink(\"\(p)\", target: \"\(t)\")"
        case let .hardlink(p, t): ".hardlink(\"\(p)\", to: \"\(t)\")"
        case let .device(p, c, ma, mi): ".device(\"\(p)\", character: \(c), major: \(ma), minor: \(mi))"
        case let .fifo(p): ".fifo(\"\(p)\")"
        case let .remove(p): ".remove(\"\(p)\")"
        case let .chmod(p, m): ".chmod(\"\(p)\", 0o\(String(m, radix: 8)))"
        case let .chown(p, u, g): ".chown(\"\(p)\", uid: \(u), gid: \(g))"
        case let .xattr(p, n, v): ".xattr(\"\(p)\", name: \"\(n)\", value: \(v.map { "\"\($0)\"" } ?? "nil"))"
        case let .mtime(p, s): ".mtime(\"\(p)\", seconds: \(s))"
        }
    }

    var path: String {
        switch self {
        case let .file(p, _, _, _), let .directory(p), let .symlink(p, _), let .hardlink(p, _), let .device(p, _, _, _),
             let .fifo(p), let .remove(p), let .chmod(p, _), let .chown(p, _, _), let .xattr(p, _, _), let .mtime(p, _):
            p
        }
    }

    /// Makes the change below `root`; returns false when it did not fit the tree (skipped).
    @discardableResult
    func apply(in root: String) -> Bool {
        let full = root + "/" + path
        let parent = (full as NSString).deletingLastPathComponent
        var isDir: ObjCBool = false
        switch self {
        case .remove, .chmod, .chown, .xattr, .mtime:
            guard (try? RawPath.status(Array(full.utf8))) != nil else { return false }
        default:
            // New entries replace what is there, inside an existing directory.
            guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDir), isDir.boolValue,
                  (try? RawPath.status(Array(parent.utf8)))?.isDirectory == true else { return false }
            if (try? RawPath.status(Array(full.utf8))) != nil { try? FileManager.default.removeItem(atPath: full) }
        }
        switch self {
        case let .file(_, size, fill, holeAt):
            guard FileManager.default.createFile(atPath: full, contents: nil),
                  let handle = FileHandle(forWritingAtPath: full) else { return false }
            defer { try? handle.close() }
            var bytes = [UInt8](repeating: 0, count: size)
            for i in bytes.indices { bytes[i] = fill &+ UInt8(truncatingIfNeeded: (i / 7) &* 31) }
            if let holeAt, holeAt < size - 4096 {
                try? handle.write(contentsOf: Data(bytes[..<holeAt]))
                try? handle.seek(toOffset: UInt64(size - 4096))
                try? handle.write(contentsOf: Data(bytes[(size - 4096)...]))
            } else {
                try? handle.write(contentsOf: Data(bytes))
            }
        case .directory:
            return Glibc.mkdir(full, 0o755) == 0
        case let .symlink(_, target):
            return Glibc.symlink(target, full) == 0
        case let .hardlink(_, to):
            guard (try? RawPath.status(Array((root + "/" + to).utf8)))?.isRegular == true else { return false }
            return Glibc.link(root + "/" + to, full) == 0
        case let .device(_, character, major, minor):
            // glibc's makedev (a macro Swift does not import): the 32-bit major and minor interleaved.
            let device = UInt64(major & 0xfff) << 8 | UInt64(minor & 0xff) | UInt64(minor & ~0xff) << 12 | UInt64(major & ~0xfff) << 32
            return Glibc.mknod(full, (character ? S_IFCHR : S_IFBLK) | 0o640, dev_t(device)) == 0
        case .fifo:
            return Glibc.mkfifo(full, 0o644) == 0
        case .remove:
            return (try? FileManager.default.removeItem(atPath: full)) != nil
        case let .chmod(_, mode):
            guard (try? RawPath.status(Array(full.utf8)))?.isSymlink == false else { return false }
            return Glibc.chmod(full, mode_t(mode)) == 0
        case let .chown(_, uid, gid):
            return Glibc.lchown(full, uid, gid) == 0
        case let .xattr(_, name, value):
            // user.* xattrs exist only on regular files and directories.
            let status = try? RawPath.status(Array(full.utf8))
            guard status?.isRegular == true || status?.isDirectory == true else { return false }
            // setfattr(1): Glibc's module does not export <sys/xattr.h>.
            let arguments = value.map { ["-n", name, "-v", "0s" + Data($0.utf8).base64EncodedString()] } ?? ["-x", name]
            return (try? Shell.run(["setfattr", "-h"] + arguments + [full]).status) == 0
        case let .mtime(_, seconds):
            let times = [timespec(tv_sec: Int(seconds), tv_nsec: 0), timespec(tv_sec: Int(seconds), tv_nsec: 0)]
            return utimensat(AT_FDCWD, full, times, AT_SYMLINK_NOFOLLOW) == 0
        }
        return true
    }
}

/// Draws random build steps against the current rootfs: names from a small pool (so later
/// steps keep hitting earlier paths), every entry type, replacements of one type by another,
/// metadata changes, hard links, large and sparse files, owners above 2^21, mtimes before 1970
/// and after 2038, names longer than 100 bytes.
struct LayerStackGenerator {
    var rng: SeededGenerator
    private var stamp = 0

    init(rng: SeededGenerator) { self.rng = rng }

    static let names = ["a", "b", "d00", "etc", "usr", "x y", "ünï", ".hidden", String(repeating: "long", count: 30)]

    /// Changes for one layer, applied to `root` as they are drawn.
    mutating func step(in root: String, first: Bool) -> [LayerChange] {
        var changes: [LayerChange] = []
        let count = first ? Int.random(in: 5...14, using: &rng) : Int.random(in: 1...8, using: &rng)
        for _ in 0..<count {
            let change = draw(in: root)
            if change.apply(in: root) { changes.append(change) }
        }
        // umoci repack makes no layer of a step without a net change, and then fails to write
        // its metadata ("mtree: file exists"); a stamp that differs in every step avoids that.
        stamp += 1
        let stampChange = LayerChange.file(".stamp", size: stamp, fill: 0x73, holeAt: nil)
        if stampChange.apply(in: root) { changes.append(stampChange) }
        return changes
    }

    private mutating func draw(in root: String) -> LayerChange {
        let existing = Self.paths(below: root)
        let directories = [""] + existing.filter { (try? RawPath.status(Array((root + "/" + $0).utf8)))?.isDirectory == true }
        let files = existing.filter { (try? RawPath.status(Array((root + "/" + $0).utf8)))?.isRegular == true }
        func newPath() -> String {
            let dir = directories.randomElement(using: &rng) ?? ""
            let name = Self.names.randomElement(using: &rng)!
            return dir.isEmpty ? name : dir + "/" + name
        }
        func anyPath() -> String { existing.randomElement(using: &rng) ?? newPath() }
        let roll = Int.random(in: 0..<100, using: &rng)
        switch roll {
        case 0..<22:
            let large = Int.random(in: 0..<12, using: &rng) == 0
            let size = large ? Int.random(in: (1 << 20)...(3 << 20), using: &rng) : Int.random(in: 0...9000, using: &rng)
            let hole = large && Bool.random(using: &rng) ? Int.random(in: 0...(size / 2), using: &rng) : nil
            return .file(newPath(), size: size, fill: UInt8.random(in: 0...255, using: &rng), holeAt: hole)
        case 22..<40: return .directory(newPath())
        case 40..<48:
            let targets = ["a", "../a", "/usr", "d00/x y", "nowhere", "/"] + existing.prefix(4)
            return .symlink(newPath(), target: targets.randomElement(using: &rng)!)
        case 48..<54:
            guard let target = files.randomElement(using: &rng) else { return .directory(newPath()) }
            return .hardlink(newPath(), to: target)
        case 54..<57:
            let character = Bool.random(using: &rng)
            return .device(newPath(), character: character, major: UInt32.random(in: 1...300, using: &rng), minor: UInt32.random(in: 0...70000, using: &rng))
        case 57..<59: return .fifo(newPath())
        case 59..<74: return .remove(anyPath())
        case 74..<81:
            let modes: [UInt32] = [0o755, 0o700, 0o644, 0o4755, 0o2711, 0o1777, 0o000, 0o640]
            return .chmod(anyPath(), modes.randomElement(using: &rng)!)
        case 81..<87:
            let ids: [UInt32] = [0, 1, 1000, 65534, 3_000_000, 2_097_152]
            return .chown(anyPath(), uid: ids.randomElement(using: &rng)!, gid: ids.randomElement(using: &rng)!)
        case 87..<93:
            let names = ["user.a", "user.comment", "trusted.ferry"]
            let value: String? = Int.random(in: 0..<4, using: &rng) == 0 ? nil : String(repeating: "v", count: Int.random(in: 0...300, using: &rng))
            return .xattr(anyPath(), name: names.randomElement(using: &rng)!, value: value)
        default:
            let times: [Int64] = [-86_400 * 400, 0, 1_000_000_000, 2_200_000_000, 9_000_000_000]
            return .mtime(anyPath(), seconds: times.randomElement(using: &rng)!)
        }
    }

    /// Every path below `root` (relative, depth-first), not following symlinks.
    static func paths(below root: String) -> [String] {
        var out: [String] = []
        func visit(_ relative: String) {
            let full = relative.isEmpty ? root : root + "/" + relative
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: full) else { return }
            for name in names.sorted() {
                let path = relative.isEmpty ? name : relative + "/" + name
                out.append(path)
                if (try? RawPath.status(Array((root + "/" + path).utf8)))?.isDirectory == true { visit(path) }
            }
        }
        visit("")
        return out
    }
}
