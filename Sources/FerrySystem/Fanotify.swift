internal import CFerry

/// A fanotify group: marks on files, events read from the group fd, answers written to it.
///
/// Ferry uses a pre-content group (`FAN_CLASS_PRE_CONTENT`) with `FAN_PRE_ACCESS` marks on
/// sparse cache files: before a read touches a range of a marked file, the reader blocks until
/// the group answers; the daemon fills the range through the event's fd and answers
/// `FAN_ALLOW`, or denies with `EIO`.
///
/// The group lives as long as any process holds its fd. When the last holder closes it, the
/// kernel answers every pending event with `FAN_ALLOW` (`fanotify_release`), so a reader of
/// an unfilled range would see zeros: see `Kernel-Notes/fanotify-precontent.md` for how Ferry
/// keeps the fd alive.
public struct FanotifyGroup: Sendable {
    /// The group fd.
    public let descriptor: FileDescriptor

    /// Wraps a group fd received from elsewhere (a predecessor, a holder process, systemd).
    public init(adopting descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// Creates a pre-content group whose event fds are opened `O_RDWR | O_LARGEFILE` (so the
    /// daemon can `pwrite` through them). The corresponding C function is `fanotify_init`.
    /// - Parameter nonBlocking: `FAN_NONBLOCK`, for use with poll or io_uring.
    /// - Parameter closeOnExec: `FAN_CLOEXEC`; pass `false` to hand the fd to a child.
    public static func preContent(nonBlocking: Bool = false, closeOnExec: Bool = true) throws -> FanotifyGroup {
        var flags = FanotifyConstants.classPreContent
        if nonBlocking { flags |= FanotifyConstants.nonblock }
        if closeOnExec { flags |= FanotifyConstants.cloexec }
        // O_LARGEFILE is 0 in glibc's 64-bit headers; the kernel's value (asm-generic/fcntl.h,
        // 0o100000) is forced on 64-bit anyway, and passed here so 32-bit would behave the same.
        let eventFlags = UInt32(O_RDWR | O_CLOEXEC) | 0o100000
        let fd = try retrying("fanotify_init(FAN_CLASS_PRE_CONTENT)") { fanotify_init(flags, eventFlags) }
        return FanotifyGroup(adopting: FileDescriptor(rawValue: fd, name: "fanotify group"))
    }

    /// Whether this kernel delivers pre-content events for files in `directory`: creates a group
    /// and marks a probe file there with `FAN_PRE_ACCESS` (Linux < 6.14 refuses the mask with
    /// EINVAL; filesystems without pre-content support refuse the mark).
    public static func preContentSupported(in directory: String) -> Bool {
        guard let group = try? preContent() else { return false }
        defer { try? group.descriptor.close() }
        let probe = directory + "/.fanotify-probe-\(getpid())"
        guard let file = try? FileDescriptor.open(probe, .createReadWrite) else { return false }
        defer { try? file.close(); unlink(probe) }
        return (try? group.mark(probe)) != nil
    }

    /// Adds `mask` (default `FAN_PRE_ACCESS`) to the inode mark on `path`. The corresponding
    /// C function is `fanotify_mark`.
    public func mark(_ path: String, mask: UInt64 = FanotifyConstants.preAccess) throws {
        _ = try retrying("fanotify_mark(FAN_MARK_ADD, \(path))") {
            fanotify_mark(descriptor.rawValue, FanotifyConstants.markAdd, mask, AT_FDCWD, path)
        }
    }

    /// Removes `mask` from the mark on `path`.
    public func unmark(_ path: String, mask: UInt64 = FanotifyConstants.preAccess) throws {
        _ = try retrying("fanotify_mark(FAN_MARK_REMOVE, \(path))") {
            fanotify_mark(descriptor.rawValue, FanotifyConstants.markRemove, mask, AT_FDCWD, path)
        }
    }

    /// Reads the events that are ready (blocking unless the group is non-blocking; a
    /// non-blocking group with nothing ready returns `[]`). The buffer holds many events; the
    /// kernel never splits one.
    public func readEvents(bufferSize: Int = 16 * 1024) throws -> [FanotifyEvent] {
        var buffer = [UInt8](repeating: 0, count: bufferSize)
        let n: Int
        do {
            n = try buffer.withUnsafeMutableBytes { dst in
                // Safe because: the kernel writes at most dst.count bytes into dst.
                try retrying("read fanotify group") { CFerry.read(descriptor.rawValue, dst.baseAddress, dst.count) }
            }
        } catch let SystemError.syscall(_, errno) where errno == EAGAIN {
            return []
        }
        return try FanotifyEvent.parse(buffer[0..<n])
    }

    /// Answers the permission event whose fd is `eventFD`. Does not close `eventFD`.
    public func respond(to eventFD: Int32, _ response: FanotifyResponse) throws {
        let bytes = response.encoded(fd: eventFD)
        let n = try bytes.withUnsafeBytes { src in
            // Safe because: src is the 8-byte struct fanotify_response.
            try retrying("write fanotify response \(response) for fd \(eventFD)") { CFerry.write(descriptor.rawValue, src.baseAddress, src.count) }
        }
        if n != bytes.count { throw SystemError.syscall("write fanotify response (short write \(n))", errno: EIO) }
    }

    /// Answers `event` and closes its fd (also when answering fails).
    public func finish(_ event: FanotifyEvent, _ response: FanotifyResponse) throws {
        defer { if event.fd >= 0 { _ = CFerry.close(event.fd) } }
        if event.isPermissionEvent && event.fd >= 0 { try respond(to: event.fd, response) }
    }

    /// Writes `count` bytes of `buffer` at `offset` through the event's fd (raises no event).
    public static func fill(eventFD: Int32, from buffer: AlignedBuffer, count: Int, at offset: UInt64) throws {
        try FileDescriptor(rawValue: eventFD, name: "fanotify event fd \(eventFD)").write(buffer, count: count, at: offset)
    }

    /// Writes `bytes` at `offset` through the event's fd (raises no event).
    public static func fill(eventFD: Int32, with bytes: [UInt8], at offset: UInt64) throws {
        try FileDescriptor(rawValue: eventFD, name: "fanotify event fd \(eventFD)").write(bytes, at: offset)
    }

    /// Closes the group fd. Pending events are then answered `FAN_ALLOW` by the kernel unless
    /// another process still holds the group fd.
    public func close() throws { try descriptor.close() }
}
