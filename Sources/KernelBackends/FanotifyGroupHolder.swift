public import FerrySystem
import Foundation

/// Keeps ferryd's fanotify group alive across daemon crashes and restarts.
///
/// The kernel destroys a group when its last descriptor closes, and with it the marks: reads of
/// the cache files would then see holes as zeros. So the group's descriptor is also held by a
/// tiny holder process (`ferryd hold-group`), which does nothing but hand it to the next ferryd
/// over a Unix socket (SCM_RIGHTS). While no ferryd runs, the kernel queues events and readers
/// block; the next ferryd takes the group over and serves them. See Kernel-Notes/fanotify-precontent.md.
public enum FanotifyGroupHolder {
    static let put: UInt8 = 0x50  // "P": here is the group
    static let get: UInt8 = 0x47  // "G": give me the group
    static let found: UInt8 = 0x67
    static let none: UInt8 = 0x6e

    /// Runs the holder: serves `get` and `put` requests on `socketPath` forever.
    /// It leaves ferryd's session and ignores termination signals: a Ctrl-C in ferryd's terminal or
    /// a kill of its process group must not take the group down (only a SIGKILL aimed at the
    /// holder, or a reboot, does; the next ferryd then says so and recovers the mounts).
    public static func serve(socketPath: String) throws -> Never {
        ProcessInfoRaw.unblockAllSignals()
        ProcessDetachment.detachAndIgnoreTermination()
        let listener = try UnixSocket.listen(at: socketPath, permissions: 0o600)
        var held: [FileDescriptor] = []
        while true {
            guard let connection = try? UnixSocket.accept(listener) else { continue }
            defer { try? connection.close() }
            guard let (tag, descriptor) = try? UnixSocket.receive(over: connection) else { continue }
            switch tag {
            case put:
                // Keep every group ever deposited: closing one could destroy a group still marked.
                if let descriptor { held.append(descriptor) }
                try? connection.write([found])
            case get:
                try? UnixSocket.send(tag: held.last == nil ? none : found, descriptor: held.last, over: connection)
            default:
                descriptor.map { try? $0.close() }
            }
        }
    }

    /// The group held by a running holder, or nil when there is none.
    public static func fetch(socketPath: String) -> FanotifyGroup? {
        fetchDescriptor(socketPath: socketPath).map {
            FanotifyGroup(adopting: FileDescriptor(rawValue: $0.rawValue, name: "fanotify group (taken over)"))
        }
    }

    /// The descriptor held by a running holder (a fanotify group, or `/dev/cachefiles` for the
    /// fscache backend: closing it would kill the cache), or nil when there is none.
    public static func fetchDescriptor(socketPath: String) -> FileDescriptor? {
        guard let socket = try? UnixSocket.connect(to: socketPath) else { return nil }
        defer { try? socket.close() }
        guard (try? UnixSocket.send(tag: get, descriptor: nil, over: socket)) != nil,
              let reply = try? UnixSocket.receive(over: socket), reply.tag == found, let fd = reply.descriptor else { return nil }
        return fd
    }

    /// Where a holder process runs.
    public enum Launch: Sendable, Equatable {
        /// A child of ferryd that leaves its session (no service manager): only a SIGKILL aimed
        /// at it, or a reboot, ends it.
        case childProcess
        /// A transient service of its own (`systemd-run --unit=NAME`), outside ferryd's unit.
        /// Under systemd the descriptor store keeps the descriptor across restarts, crashes and
        /// watchdog kills, but systemd before 254 empties the store when the service is
        /// *stopped*: a holder in ferryd's own cgroup would be killed with it, so it gets a unit
        /// that `systemctl stop ferryd` leaves alone (Kernel-Notes/failover.md).
        case transientUnit(name: String)
    }

    /// Starts a holder process (this executable with `hold-group`) and hands it `descriptor`.
    public static func startHolder(holding descriptor: FileDescriptor, socketPath: String, launch: Launch = .childProcess) throws {
        switch launch {
        case .childProcess:
            try run("/proc/self/exe", ["hold-group", "--socket", socketPath], waitForExit: false)
        case let .transientUnit(name):
            // The unit execs this very binary through our /proc entry (still valid while we run,
            // also after an upgrade replaced the file on disk).
            let arguments = ["--unit=\(name)", "--collect", "--quiet",
                             "--description=Ferry: keeps ferryd's kernel descriptor while no ferryd runs",
                             "--property=KillSignal=SIGKILL", "--property=OOMScoreAdjust=-1000",
                             "--", "/proc/\(ProcessInfoRaw.pid)/exe", "hold-group", "--socket", socketPath]
            let systemdRun = ["/usr/bin/systemd-run", "/bin/systemd-run"].first { FileManager.default.isExecutableFile(atPath: $0) }
            guard let systemdRun else { throw SystemError.syscall("systemd-run not found (needed to keep the kernel descriptor outside ferryd's unit)", errno: 2) }
            if try run(systemdRun, arguments, waitForExit: true) != 0 {
                // A holder unit of an earlier ferryd whose socket no longer answers (else its
                // descriptor would have been taken over): it holds nothing anyone can reach.
                _ = try? run("/usr/bin/systemctl", ["stop", "\(name).service"], waitForExit: true)
                let status = try run(systemdRun, arguments, waitForExit: true)
                guard status == 0 else { throw SystemError.syscall("systemd-run --unit=\(name) exited with \(status)", errno: 5) }
            }
        }
        // Up to 30 s: starting a large binary in a slow (emulated, loaded) machine took over the
        // 2 s this once allowed, and ferryd then refused to start.
        for _ in 0..<3000 {
            if let socket = try? UnixSocket.connect(to: socketPath) {
                defer { try? socket.close() }
                try UnixSocket.send(tag: put, descriptor: descriptor, over: socket)
                _ = try socket.read(upTo: 1, partial: true)
                return
            }
            usleep(10_000)
        }
        throw SystemError.syscall("fanotify group holder did not start at \(socketPath)", errno: 110)
    }

    /// Starts `executable`; with `waitForExit`, returns its exit status (else 0 once started).
    @discardableResult
    private static func run(_ executable: String, _ arguments: [String], waitForExit: Bool) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        guard waitForExit else { return 0 }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Answers permission events that a dead ferryd had read but not answered, with EIO, so their
    /// readers fail instead of blocking forever. The kernel matches a response by the event's fd
    /// number in the reader's table, which died with it; so every plausible number is tried. Call
    /// before reading any event yourself.
    /// `limit` defaults to this process's descriptor limit (the dead ferryd had the same unit's).
    /// Numbers in `except` (events the in-flight journal recorded, which the successor serves) are skipped.
    public static func answerOrphans(of group: FanotifyGroup, upTo limit: Int32 = Int32(clamping: ProcessLimits.openFileSoftLimit()),
                                     except: Set<Int32> = []) -> [Int32] {
        var answered: [Int32] = []
        for fd in 0..<limit where !except.contains(fd) && (try? group.respond(to: fd, .denyWithErrno(5))) != nil {
            answered.append(fd)
        }
        return answered
    }
}
