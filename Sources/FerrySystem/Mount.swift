internal import CFerry

/// `mount(2)` and `umount2(2)`, plus the option strings of Ferry's two EROFS mount forms.
public enum Mount {
    /// Mount flags (`MS_*` from `<sys/mount.h>`).
    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt
        public init(rawValue: UInt) { self.rawValue = rawValue }
        public static let readOnly = Flags(rawValue: UInt(MS_RDONLY))
        public static let noSUID = Flags(rawValue: UInt(MS_NOSUID))
        public static let noDev = Flags(rawValue: UInt(MS_NODEV))
        public static let noExec = Flags(rawValue: UInt(MS_NOEXEC))
    }

    /// Unmount flags (`MNT_*`, `<sys/mount.h>`: MNT_FORCE 1, MNT_DETACH 2).
    public struct UnmountFlags: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// `MNT_DETACH`: lazy unmount.
        public static let detach = UnmountFlags(rawValue: 2)
        /// `MNT_FORCE`.
        public static let force = UnmountFlags(rawValue: 1)
        /// `UMOUNT_NOFOLLOW` (8): the last component is not followed if it is a symbolic link.
        public static let noFollow = UnmountFlags(rawValue: 8)
    }

    /// Mounts `source` on `target`. The corresponding C function is `mount`.
    public static func mount(source: String, target: String, type: String, flags: Flags = [], data: String = "") throws {
        _ = try retrying("mount -t \(type) \(source) \(target) -o \(data)") {
            CFerry.mount(source, target, type, flags.rawValue, data.isEmpty ? nil : data)
        }
    }

    /// Unmounts `target`. The corresponding C function is `umount2`.
    public static func unmount(_ target: String, flags: UnmountFlags = []) throws {
        _ = try retrying("umount \(target)") { umount2(target, flags.rawValue) }
    }

    /// Opens `path` (absolute) as an `O_PATH` directory descriptor without following any symbolic
    /// link on the way (`openat2` with `RESOLVE_NO_SYMLINKS`): a path that a symlink, planted by
    /// whoever can write one of its directories, would redirect is refused with ELOOP. Mount on
    /// and unmount through `/proc/self/fd/<fd>` of it, and the kernel acts on the very directory
    /// that was checked.
    ///
    /// Where `openat2` fails with ENOSYS the path is walked instead, one component at a time
    /// (`walkWithoutFollowing`). Seccomp filters that cannot look into `openat2`'s `struct
    /// open_how` answer it that way so that callers fall back to `openat`: systemd's
    /// `RestrictSUIDSGID=`, which ferryd.service sets (ferryd under systemd 252 could mount
    /// nothing: SystemdGuestTests), as do container runtimes' default profiles; Linux before 5.6
    /// has no `openat2` at all.
    public static func openMountpoint(_ path: String) throws -> FileDescriptor {
        try openMountpoint(path) { path, flags, resolve in cferry_openat2(AT_FDCWD, path, flags, resolve) }
    }

    /// `openMountpoint` with the `openat2` call given (tests stand in a filtered one).
    static func openMountpoint(_ path: String, openat2: (String, UInt64, UInt64) -> Int32) throws -> FileDescriptor {
        let what = "open mountpoint \(path) (no symbolic links may be in it)"
        do {
            let fd = try retrying(what) { openat2(path, UInt64(cferry_O_PATH | O_DIRECTORY | O_CLOEXEC), UInt64(RESOLVE_NO_SYMLINKS)) }
            return FileDescriptor(rawValue: fd, name: path)
        } catch SystemError.syscall(_, errno: ENOSYS) {
            return try walkWithoutFollowing(path, what: what)
        }
    }

    /// What `RESOLVE_NO_SYMLINKS` does, by hand: from `/`, each component is opened relative to
    /// the previous one with `O_PATH | O_NOFOLLOW` (a symbolic link is then opened as itself, not
    /// followed) and checked with `fstat`: a link fails with ELOOP, anything but a directory with
    /// ENOTDIR. Mounts are crossed, as `openat2` without `RESOLVE_NO_XDEV` crosses them.
    static func walkWithoutFollowing(_ path: String, what: String) throws -> FileDescriptor {
        guard path.hasPrefix("/") else { throw SystemError.syscall(what, errno: EINVAL) }
        let flags = cferry_O_PATH | O_NOFOLLOW | O_CLOEXEC
        var current = FileDescriptor(rawValue: try retrying(what) { cferry_open("/", flags | O_DIRECTORY, 0) }, name: "/")
        for component in path.split(separator: "/") where component != "." {
            let name = String(component)
            let next: FileDescriptor
            do {
                next = FileDescriptor(rawValue: try retrying(what) { cferry_openat(current.rawValue, name, flags, 0) }, name: path)
            } catch {
                try? current.close()
                throw error
            }
            try? current.close()
            current = next
            var st = stat()
            do {
                _ = try retrying(what) { fstat(current.rawValue, &st) }
            } catch {
                try? current.close()
                throw error
            }
            let type = st.st_mode & UInt32(S_IFMT)
            if type != UInt32(S_IFDIR) {
                try? current.close()
                throw SystemError.syscall(what, errno: type == UInt32(S_IFLNK) ? ELOOP : ENOTDIR)
            }
        }
        return current
    }

    /// Unmounts the mount at `path` (absolute) without following a symbolic link anywhere in it:
    /// its parent is opened with `openMountpoint`, and the mount is named through that descriptor
    /// with `UMOUNT_NOFOLLOW`. (A descriptor of the mountpoint itself would keep the mount busy.)
    public static func unmountWithoutFollowing(_ path: String, flags: UnmountFlags = []) throws {
        let slash = path.lastIndex(of: "/") ?? path.startIndex
        let parent = slash == path.startIndex ? "/" : String(path[..<slash])
        let name = String(path[path.index(after: slash)...])
        guard !name.isEmpty, name != ".", name != ".." else {
            throw SystemError.syscall("umount \(path) (not a mountpoint name)", errno: EINVAL)
        }
        let directory = try openMountpoint(parent)
        defer { try? directory.close() }
        _ = try retrying("umount \(path)") { umount2(procPath(of: directory) + "/" + name, flags.union(.noFollow).rawValue) }
    }

    /// `/proc/self/fd/<fd>`: the path the kernel resolves to exactly the object `fd` names.
    public static func procPath(of fd: FileDescriptor) -> String { "/proc/self/fd/\(fd.rawValue)" }

    /// The data string of a file-backed EROFS mount with extra devices:
    /// `device=<path>` once per device, in device-table order (EROFS's `Opt_device` appends
    /// one device per occurrence, `fs/erofs/super.c`).
    public static func erofsDeviceOptions(_ devices: [String]) throws -> String {
        for d in devices {
            try checkOption(d, what: "EROFS device path")
        }
        return devices.map { "device=\($0)" }.joined(separator: ",")
    }

    /// The data string of an EROFS-over-fscache mount: `fsid=<id>[,domain_id=<id>]`.
    public static func erofsFscacheOptions(fsid: String, domainID: String? = nil) throws -> String {
        try checkOption(fsid, what: "fsid")
        guard let domainID else { return "fsid=\(fsid)" }
        try checkOption(domainID, what: "domain_id")
        return "fsid=\(fsid),domain_id=\(domainID)"
    }

    /// Mounts the EROFS image in the regular file `file` on `target`, read-only, with
    /// `devices` as its extra devices: a file-backed mount (Linux 6.12+,
    /// `CONFIG_EROFS_FS_BACKED_BY_FILE`), no loop device, so fanotify pre-content hooks on the
    /// device files fire. `flags` are added to `MS_RDONLY`.
    public static func erofs(file: String, devices: [String], at target: String, flags: Flags = []) throws {
        try mount(source: file, target: target, type: "erofs", flags: flags.union(.readOnly), data: try erofsDeviceOptions(devices))
    }

    /// Mounts an EROFS image served by cachefiles on-demand (`CONFIG_EROFS_FS_ONDEMAND`):
    /// source `none`, data `fsid=…[,domain_id=…]`.
    public static func erofsOnDemand(fsid: String, domainID: String? = nil, at target: String, flags: Flags = []) throws {
        try mount(source: "none", target: target, type: "erofs", flags: flags.union(.readOnly),
                  data: try erofsFscacheOptions(fsid: fsid, domainID: domainID))
    }

    /// The mount option parser splits on commas and a NUL ends the string.
    static func checkOption(_ value: String, what: String) throws {
        if value.isEmpty { throw SystemError.invalidArgument(what, reason: "is empty") }
        if value.contains(",") || value.contains("\0") {
            throw SystemError.invalidArgument("\(what) \"\(value)\"", reason: "a mount option value cannot contain ',' or NUL")
        }
    }

    /// The backing-device info (`/sys/class/bdi/erofs-N`) each EROFS superblock gets: file-backed
    /// and fscache mounts have no block device, so the kernel gives the superblock its own bdi
    /// (`super_setup_bdi`), named by a global counter. Its `read_ahead_kb` sets how far the kernel
    /// reads around a page fault and ahead of a sequential reader on that mount.
    public enum ReadaheadControl {
        static let bdiDirectory = "/sys/class/bdi"

        /// Names of the EROFS bdis that exist now.
        public static func erofsBDINames() -> Set<String> {
            let names = (try? RawPath.list(Array(bdiDirectory.utf8))) ?? []
            return Set(names.map { String(decoding: $0, as: UTF8.self) }.filter { $0.hasPrefix("erofs-") })
        }

        /// Sets `read_ahead_kb` of the bdi `name`.
        public static func setReadahead(kib: Int, bdi name: String) throws {
            let path = "\(bdiDirectory)/\(name)/read_ahead_kb"
            let fd = try FileDescriptor.open(path, .readWrite)
            defer { try? fd.close() }
            try fd.write(Array("\(kib)\n".utf8))
        }
    }
}
