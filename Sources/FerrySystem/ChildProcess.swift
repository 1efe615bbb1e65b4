internal import CFerry
internal import Glibc

/// A child process started with chosen descriptors at chosen numbers: what a service manager
/// does when it passes `LISTEN_FDS` (Foundation's `Process` closes every descriptor above 2).
public struct ChildProcess: Sendable {
    /// The child's process id.
    public let pid: Int32

    /// Starts `executable` with `arguments` (without argv[0]) and exactly `environment`; each
    /// `descriptors[n]` becomes descriptor `n` in the child (0, 1, 2 default to /dev/null).
    /// The corresponding C function is `posix_spawn`.
    public static func spawn(_ executable: String, arguments: [String], environment: [String: String],
                             descriptors: [Int32: FileDescriptor]) throws -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for target in Int32(0)...2 where descriptors[target] == nil {
            posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_RDWR, 0)
        }
        // dup2 onto a different number clears close-on-exec; a descriptor already at its target
        // keeps its flags, so it is moved through a spare number first.
        for (target, source) in descriptors.sorted(by: { $0.key < $1.key }) where source.rawValue == target {
            let spare = cferry_fcntl_int(source.rawValue, F_DUPFD_CLOEXEC, 100)
            guard spare >= 0 else { throw SystemError.syscall("fcntl(F_DUPFD_CLOEXEC) \(source.name)", errno: Errno.current) }
            posix_spawn_file_actions_adddup2(&actions, spare, target)
        }
        for (target, source) in descriptors.sorted(by: { $0.key < $1.key }) where source.rawValue != target {
            posix_spawn_file_actions_adddup2(&actions, source.rawValue, target)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A child of a multithreaded Swift program would inherit blocked signals; a daemon must die on SIGTERM.
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) }
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") }
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = (argv + [nil]).withUnsafeBufferPointer { a in
            (envp + [nil]).withUnsafeBufferPointer { e in
                // Safe because: both arrays are NULL-terminated and outlive the call.
                guard let arguments = a.baseAddress else { return EINVAL }
                return posix_spawn(&pid, executable, &actions, &attributes, arguments, e.baseAddress)
            }
        }
        guard rc == 0 else { throw SystemError.syscall("posix_spawn \(executable)", errno: rc) }
        return ChildProcess(pid: pid)
    }

    /// Sends `signal` to the child. The corresponding C function is `kill`.
    public func signal(_ signal: Int32) {
        _ = Glibc.kill(pid, signal)
    }

    /// Waits for the child to end; returns its exit status, or 128 + the signal that ended it.
    /// The corresponding C function is `waitpid`.
    @discardableResult
    public func wait() throws -> Int32 {
        var status: Int32 = 0
        _ = try retrying("waitpid \(pid)") { waitpid(pid, &status, 0) }
        if cferry_wifexited(status) != 0 { return cferry_wexitstatus(status) }
        return 128 + (status & 0x7f)
    }

    /// Whether the child has ended (reaping it if so), without blocking.
    public func hasEnded() -> Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == pid
    }
}
