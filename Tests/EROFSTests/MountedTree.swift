import Foundation
@testable import EROFS

/// What a real filesystem shows for one path, as listed by /usr/bin/python3 (os.lstat,
/// os.listxattr, os.readlink): an oracle independent from Ferry's reader.
struct ListedEntry: Decodable {
    var path: String
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var mtime_ns: Int64
    var nlink: UInt32
    var ino: UInt64
    var size: UInt64
    var rdev_major: UInt32
    var rdev_minor: UInt32
    var xattrs: [String: String]
    var target: String
    var content: String
}

private let listerScript = #"""
import os, sys, json, stat
root = sys.argv[1].encode()
out = []
def visit(rel):
    p = root + rel
    st = os.lstat(p)
    e = {"path": (rel or b"/").hex(), "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
         "mtime_ns": st.st_mtime_ns, "nlink": st.st_nlink, "ino": st.st_ino, "size": st.st_size,
         "rdev_major": os.major(st.st_rdev), "rdev_minor": os.minor(st.st_rdev),
         "xattrs": {}, "target": "", "content": ""}
    for name in os.listxattr(p, follow_symlinks=False):
        value = os.getxattr(p, name, follow_symlinks=False)
        e["xattrs"][name.encode("utf-8", "surrogateescape").hex()] = value.hex()
    if stat.S_ISLNK(st.st_mode):
        e["target"] = os.readlink(p).hex()
    elif stat.S_ISREG(st.st_mode) and st.st_size <= 1 << 20:
        with open(p, "rb") as f:
            e["content"] = f.read().hex()
    out.append(e)
    if stat.S_ISDIR(st.st_mode):
        for name in sorted(os.listdir(p)):
            visit(rel + b"/" + name)
visit(b"")
json.dump(out, sys.stdout)
"""#

/// Lists the tree under `root` with Python.
func listTree(_ root: String) throws -> [ListedEntry] {
    let result = try run("/usr/bin/python3", ["-c", listerScript, root])
    guard result.status == 0 else { throw EROFSError.io(path: root, reason: result.output) }
    return try JSONDecoder().decode([ListedEntry].self, from: Data(result.output.utf8))
}

func hexString(_ bytes: [UInt8]) -> String { bytes.map(hex2).joined() }

/// Mounts via mount(2) directly, so a regular image file gets the kernel's file-backed mode
/// (util-linux's mount would attach a loop device instead) and `device=` may name files.
func mountFileBacked(image: String, at mountPoint: String, options: String) throws -> (status: Int32, output: String) {
    let script = """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(sys.argv[1].encode(), sys.argv[2].encode(), b"erofs", 1, sys.argv[3].encode()) != 0:
        print(os.strerror(ctypes.get_errno())); sys.exit(1)
    """
    return try run("/usr/bin/python3", ["-c", script, image, mountPoint, options])
}

/// Why kernel tests cannot run here, or nil when they can.
func mountUnavailableReason() -> String? {
    guard (try? run("id", ["-u"]).output.trimmingCharacters(in: .whitespacesAndNewlines)) == "0" else {
        return "not running as root"
    }
    guard let filesystems = try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8),
          filesystems.contains("erofs") else { return "the kernel has no erofs support" }
    guard FileManager.default.fileExists(atPath: "/usr/bin/python3") else { return "/usr/bin/python3 is missing" }
    return nil
}

/// What to compare between the model and a listed tree.
struct Comparison {
    var xattrs = true
    var inodeNumbers = true
    var specialPermissionBits = true
    var symlinkPermissions = true
    /// Paths whose size and content are not compared (with the reason in the caller).
    var skipContent: Set<String> = []
}

/// Compares a listed tree with the fixture's model, path by path and field by field.
func compare(_ listed: [ListedEntry], with fixture: RichFixture, nids: [UInt64], rules: Comparison,
             readLarge: (String) throws -> (UInt64, Int) throws -> [UInt8]) throws -> [String] {
    var problems: [String] = []
    let expected = fixture.paths()
    let links = fixture.linkCounts()
    guard listed.map(\.path) == expected.map({ hexString($0.path) }) else {
        return ["path lists differ: \(listed.count) listed, \(expected.count) expected; first listed "
                + "\(listed.prefix(3).map(\.path)) vs \(expected.prefix(3).map { hexString($0.path) })"]
    }
    var inodeOfNode: [Int: UInt64] = [:]
    for (entry, (path, index)) in zip(listed, expected) {
        let node = fixture.tree.nodes[index]
        let label = printable(path)
        func check(_ ok: Bool, _ what: String) { if !ok { problems.append("\(label): \(what)") } }
        let type = FileType(node.content)
        let permissionMask: UInt32 = rules.specialPermissionBits ? 0o7777 : 0o777
        check(entry.mode & 0o170000 == UInt32(type.modeBits), "type bits 0o\(String(entry.mode, radix: 8))")
        check((type == .symlink && !rules.symlinkPermissions)
                || entry.mode & permissionMask == UInt32(node.permissions) & permissionMask,
              "mode 0o\(String(entry.mode, radix: 8)) vs permissions 0o\(String(node.permissions, radix: 8))")
        check(entry.uid == node.uid && entry.gid == node.gid, "owner \(entry.uid):\(entry.gid)")
        check(entry.mtime_ns == node.mtimeSeconds * 1_000_000_000 + Int64(node.mtimeNanoseconds),
              "mtime_ns \(entry.mtime_ns)")
        if rules.inodeNumbers {
            check(entry.nlink == links[index], "nlink \(entry.nlink) vs \(links[index])")
            if let known = inodeOfNode[index] {
                check(entry.ino == known, "hard link has inode \(entry.ino), other name \(known)")
            } else {
                inodeOfNode[index] = entry.ino
            }
            check(entry.ino == nids[index], "inode number \(entry.ino) is not nid \(nids[index])")
        }
        if rules.xattrs {
            let want = Dictionary(uniqueKeysWithValues: node.xattrs.map { (hexString($0.name), hexString($0.value)) })
            check(entry.xattrs == want, "xattrs \(entry.xattrs.keys.sorted()) vs \(want.keys.sorted())")
        }
        switch node.content {
        case let .regular(size, _):
            if rules.skipContent.contains(label) { break }
            check(entry.size == size, "size \(entry.size) vs \(size)")
            if size <= 1 << 20 {
                check(entry.content == hexString(fixture.expectedBytes(node: index, offset: 0, count: Int(size))), "content")
            } else {
                let reader = try readLarge(label)
                for offset in [UInt64(0), 65530, 1 << 31, size - 70000, size - 1] {
                    check(try reader(offset, 70000) == fixture.expectedBytes(node: index, offset: offset, count: 70000),
                          "content at \(offset)")
                }
            }
        case let .symlink(target):
            check(entry.target == hexString(target), "symlink target")
        case let .characterDevice(rdev), let .blockDevice(rdev):
            let major = (rdev & 0xFFF00) >> 8
            let minor = (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00)
            check(entry.rdev_major == major && entry.rdev_minor == minor, "rdev \(entry.rdev_major):\(entry.rdev_minor)")
        default:
            break
        }
    }
    let distinct = Set(listed.map(\.ino))
    if rules.inodeNumbers, distinct.count != Set(expected.map(\.node)).count {
        problems.append("\(distinct.count) distinct inode numbers for \(Set(expected.map(\.node)).count) nodes")
    }
    return problems
}

/// Reads `count` bytes at `offset` of a file (for files too big to list).
func readFileRange(_ path: String) throws -> (UInt64, Int) throws -> [UInt8] {
    { offset, count in
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        return [UInt8](try handle.read(upToCount: count) ?? Data())
    }
}
