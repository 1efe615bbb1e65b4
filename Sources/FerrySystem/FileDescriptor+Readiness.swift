internal import CFerry

extension FileDescriptor {
    /// Sets `O_NONBLOCK` on the open file description (shared with every process holding a
    /// duplicate of it). The corresponding C function is `fcntl(F_SETFL)`.
    public func setNonBlocking() throws {
        let flags = try retrying("fcntl(F_GETFL) \(name)") { cferry_fcntl_int(rawValue, F_GETFL, 0) }
        _ = try retrying("fcntl(F_SETFL, O_NONBLOCK) \(name)") { cferry_fcntl_int(rawValue, F_SETFL, flags | O_NONBLOCK) }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) until the descriptor is readable.
    /// The corresponding C function is `poll`.
    public func waitReadable(timeoutMilliseconds: Int32) throws -> Bool {
        var p = pollfd(fd: rawValue, events: Int16(POLLIN), revents: 0)
        return try retrying("poll \(name)") { CFerry.poll(&p, 1, timeoutMilliseconds) } > 0
    }

    /// The target of `/proc/self/fd/<n>`: a path, or e.g. `anon_inode:[fanotify]` for a
    /// fanotify group. The corresponding C function is `readlink`.
    public func procLink() throws -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = try retrying("readlink /proc/self/fd/\(rawValue)") {
            readlink("/proc/self/fd/\(rawValue)", &buffer, buffer.count - 1)
        }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension FileDescriptor {
    /// Drops the file's clean cached pages so the next read goes to the filesystem again.
    /// The corresponding C function is `posix_fadvise(POSIX_FADV_DONTNEED)`.
    public func dropCachedPages() throws {
        let rc = posix_fadvise(rawValue, 0, 0, POSIX_FADV_DONTNEED)
        if rc != 0 { throw SystemError.syscall("posix_fadvise(DONTNEED) \(name)", errno: rc) }
    }
}
