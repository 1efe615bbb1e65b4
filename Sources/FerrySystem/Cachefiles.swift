internal import CFerry

/// A command written to `/dev/cachefiles` (`cachefiles_daemon_cmds` in
/// `fs/cachefiles/daemon.c`): one text line per `write(2)`.
public enum CachefilesCommand: Sendable, Equatable {
    /// `dir <path>`: the cache directory (local filesystem with xattrs and direct I/O).
    case directory(String)
    /// `tag <name>`: the cache's tag (default `CacheFiles`).
    case tag(String)
    /// `bind ondemand`: start the cache in on-demand mode (`CONFIG_CACHEFILES_ONDEMAND`).
    case bindOnDemand
    /// `copen <msg_id>,<size>`: OPEN succeeded; the object holds `size` bytes.
    case openComplete(messageID: UInt32, size: Int64)
    /// `copen <msg_id>,-<errno>`: OPEN failed; the mount (or the device) gets `errno`.
    case openFailed(messageID: UInt32, errno: Int32)
    /// `restore`: mark every in-flight request new again, so a daemon that took over the
    /// device fd reads them again (Linux 6.8+; backported to Debian's 6.1).
    case restore

    /// The bytes written.
    public var text: String {
        switch self {
        case let .directory(path): return "dir \(path)"
        case let .tag(name): return "tag \(name)"
        case .bindOnDemand: return "bind ondemand"
        case let .openComplete(id, size): return "copen \(id),\(size)"
        case let .openFailed(id, errno): return "copen \(id),-\(errno)"
        case .restore: return "restore"
        }
    }
}

/// The cachefiles control device in on-demand mode.
///
/// Closing the device fd ends the cache: the kernel fails every pending request with `EIO`
/// and all later ones too (`cachefiles_daemon_release` → `cachefiles_flush_reqs`), so the fd
/// must outlive daemon restarts (pass it on, then write `restore`).
public struct CachefilesDevice: Sendable {
    /// The device fd.
    public let descriptor: FileDescriptor

    /// Wraps a device fd received from a predecessor or systemd's fd store.
    public init(adopting descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// Opens `/dev/cachefiles` (only one opener at a time: `EBUSY` otherwise).
    public static func open(_ path: String = "/dev/cachefiles", nonBlocking: Bool = false) throws -> CachefilesDevice {
        var flags = O_RDWR | O_CLOEXEC
        if nonBlocking { flags |= O_NONBLOCK }
        let fd = try retrying("open \(path)") { cferry_open(path, flags, 0) }
        return CachefilesDevice(adopting: FileDescriptor(rawValue: fd, name: path))
    }

    /// Writes one command. The kernel rejects a command with a NUL (`EINVAL`).
    public func send(_ command: CachefilesCommand) throws {
        let bytes = Array(command.text.utf8)
        guard !bytes.contains(0), !bytes.contains(UInt8(ascii: "\n")) else {
            throw SystemError.invalidArgument("cachefiles command \"\(command.text)\"", reason: "contains NUL or newline")
        }
        let n = try bytes.withUnsafeBytes { src in
            // Safe because: src is the command text; the kernel copies it.
            try retrying("cachefiles \(command.text)") { CFerry.write(descriptor.rawValue, src.baseAddress, src.count) }
        }
        if n != bytes.count { throw SystemError.syscall("cachefiles \(command.text) (short write)", errno: EIO) }
    }

    /// `dir`, `tag`, then `bind ondemand`.
    public func bindOnDemand(directory: String, tag: String? = nil) throws {
        try send(.directory(directory))
        if let tag { try send(.tag(tag)) }
        try send(.bindOnDemand)
    }

    /// Reads one request. Returns `nil` when none is pending (the kernel returns 0 bytes; with
    /// a blocking fd too: poll for `POLLIN` first). An OPEN installs its anonymous fd in this
    /// process as a side effect of the read.
    public func readMessage() throws -> CachefilesMessage? {
        var buffer = [UInt8](repeating: 0, count: CachefilesMessage.maxSize)
        let n: Int
        do {
            n = try buffer.withUnsafeMutableBytes { dst in
                // Safe because: the kernel writes at most dst.count bytes (else EMSGSIZE).
                try retrying("read \(descriptor.name)") { CFerry.read(descriptor.rawValue, dst.baseAddress, dst.count) }
            }
        } catch let SystemError.syscall(_, errno) where errno == EAGAIN {
            return nil
        }
        if n == 0 { return nil }
        return try CachefilesMessage.parse(buffer[0..<n])
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) for a request; true when one is ready.
    public func waitForMessage(timeoutMilliseconds: Int32 = -1) throws -> Bool {
        var p = pollfd(fd: descriptor.rawValue, events: Int16(POLLIN), revents: 0)
        let n = try retrying("poll \(descriptor.name)") { CFerry.poll(&p, 1, timeoutMilliseconds) }
        return n > 0 && p.revents & Int16(POLLIN) != 0
    }

    /// Closes the device: ends the cache (see the type's documentation).
    public func close() throws { try descriptor.close() }
}

/// The anonymous fd of one cachefiles object (from an OPEN request).
public enum CachefilesObject {
    /// `CACHEFILES_IOC_READ_COMPLETE` = `_IOW(0x98, 1, int)` (`include/uapi/linux/cachefiles.h`):
    /// direction write (1) << 30 | size 4 << 16 | type 0x98 << 8 | number 1 = 0x4004_9801
    /// (`include/uapi/asm-generic/ioctl.h`: _IOC_NRSHIFT 0, TYPESHIFT 8, SIZESHIFT 16, DIRSHIFT 30).
    public static let readCompleteIoctl: UInt = (1 << 30) | (4 << 16) | (0x98 << 8) | 1

    /// The header's own value, for a test to compare against.
    static var readCompleteIoctlFromHeader: UInt { UInt(cferry_cachefiles_ioc_read_complete()) }

    /// Tells the kernel the READ request `messageID` is done (data written, or not: the
    /// kernel then re-checks the cache file, and an unfilled range fails the read with EIO...
    /// see `Kernel-Notes/cachefiles-ondemand.md`).
    public static func readComplete(fd: Int32, messageID: UInt32) throws {
        _ = try retrying("ioctl CACHEFILES_IOC_READ_COMPLETE \(messageID) on fd \(fd)") {
            cferry_ioctl_ulong(fd, readCompleteIoctl, UInt(messageID))
        }
    }

    /// Writes `count` bytes (a multiple of the page size) of `buffer` at `offset` (page-aligned)
    /// into the object: direct I/O into the backing cache file.
    public static func write(fd: Int32, from buffer: AlignedBuffer, count: Int, at offset: UInt64) throws {
        try FileDescriptor(rawValue: fd, name: "cachefiles object fd \(fd)").write(buffer, count: count, at: offset)
    }
}
