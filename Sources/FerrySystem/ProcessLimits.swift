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
