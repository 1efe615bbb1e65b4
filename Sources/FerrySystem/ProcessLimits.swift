internal import CFerry
internal import Glibc

/// Resource limits of the running process.
public enum ProcessLimits {
    /// Raises the soft limit on open descriptors to the hard limit and returns the new soft limit.
    /// ferryd holds descriptors for kernel events, cache files and network clients at once; the
    /// usual soft limit of 1024 would let a burst of connections starve the kernel backend (a
    /// fanotify event that cannot get a descriptor). The corresponding C functions are
    /// `getrlimit` and `setrlimit`.
    @discardableResult
    public static func raiseOpenFileLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
    }
}

extension ProcessLimits {
    /// The soft limit on open descriptors (`getrlimit(RLIMIT_NOFILE)`), at most `cap`.
    public static func openFileSoftLimit(cap: UInt64 = 1 << 20) -> UInt64 {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return min(UInt64(limit.rlim_cur), cap)
    }
}

/// Making a long-lived helper process hard to end by accident.
public enum ProcessDetachment {
    /// Leaves the caller's session and process group (`setsid`), so a terminal's Ctrl-C or a
    /// `kill` of the group that started it does not reach this process; ignores SIGINT, SIGTERM,
    /// SIGHUP and SIGQUIT; and asks the OOM killer never to pick it (`oom_score_adj` -1000, root
    /// only; silently kept otherwise). Only a SIGKILL aimed at this process ends it.
    public static func detachAndIgnoreTermination() {
        _ = setsid()
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] { signal(sig, SIG_IGN) }
        if let fd = try? FileDescriptor.open("/proc/self/oom_score_adj", .readWrite) {
            _ = try? fd.write(Array("-1000\n".utf8))
            try? fd.close()
        }
    }
}

/// The kernel's cached pages of files.
public enum PageCache {
    /// Drops the clean, unmapped cached pages of every regular file below `directory` (without
    /// following symbolic links or leaving its filesystem): the next read of them goes to the
    /// filesystem again. The corresponding C function is `posix_fadvise(POSIX_FADV_DONTNEED)`.
    /// Returns how many files were dropped.
    @discardableResult
    public static func dropCachedPages(under directory: String) -> Int {
        var dropped = 0
        var pending = [directory]
        var device: UInt64?
        while let dir = pending.popLast() {
            guard let stream = opendir(dir) else { continue }
            defer { closedir(stream) }
            while let entry = readdir(stream) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in  // safe because d_name is NUL-terminated within the dirent
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                guard name != ".", name != ".." else { continue }
                let path = dir + "/" + name
                var status = stat()
                guard lstat(path, &status) == 0 else { continue }
                if device == nil { device = UInt64(status.st_dev) }
                guard UInt64(status.st_dev) == device else { continue }
                switch status.st_mode & S_IFMT {
                case S_IFDIR:
                    pending.append(path)
                case S_IFREG:
                    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
                    guard fd >= 0 else { continue }
                    if posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0 { dropped += 1 }
                    close(fd)
                default:
                    continue
                }
            }
        }
        return dropped
    }
}
