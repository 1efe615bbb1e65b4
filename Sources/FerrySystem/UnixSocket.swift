internal import CFerry
internal import Glibc

/// Stream sockets in the Unix domain, for ferryd's control API.
public enum UnixSocket {
    /// The listen backlog ferryd's sockets ask for (the kernel caps it at `net.core.somaxconn`).
    public static let defaultBacklog: Int32 = 4096

    /// Creates a listening socket at `path` (replacing a stale socket file) with `permissions`.
    /// The corresponding C functions are `socket`, `bind`, `chmod` and `listen`.
    public static func listen(at path: String, permissions: UInt32 = 0o600, backlog: Int32 = defaultBacklog) throws -> FileDescriptor {
        let fd = try retrying("socket(AF_UNIX)") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let socketFD = FileDescriptor(rawValue: fd, name: path)
        do {
            unlink(path)
            var address = try makeAddress(path)
            _ = try withUnsafePointer(to: &address) { p in
                // Safe because: p points at a sockaddr_un that lives for the call.
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    try retrying("bind \(path)") { bind(fd, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            }
            _ = try retrying("chmod \(path)") { chmod(path, mode_t(permissions)) }
            _ = try retrying("listen \(path)") { CFerry.listen(fd, backlog) }
            return socketFD
        } catch {
            try? socketFD.close()
            throw error
        }
    }

    /// Sets the listen backlog of `socket`, which already listens (any stream socket, Unix or
    /// TCP): listening again changes only the queue's depth. Needed where a library listens again
    /// on a socket it takes over, with a backlog of its own. The corresponding C function is `listen`.
    public static func setBacklog(_ socket: FileDescriptor, to backlog: Int32 = defaultBacklog) throws {
        _ = try retrying("listen \(socket.name)") { CFerry.listen(socket.rawValue, backlog) }
    }

    /// Accepts one connection. The corresponding C function is `accept`.
    public static func accept(_ listener: FileDescriptor) throws -> FileDescriptor {
        let fd = try retrying("accept \(listener.name)") { CFerry.accept(listener.rawValue, nil, nil) }
        _ = cferry_fcntl_int(fd, F_SETFD, FD_CLOEXEC)
        return FileDescriptor(rawValue: fd, name: "\(listener.name) connection")
    }

    /// Connects to the socket at `path`. The corresponding C function is `connect`.
    public static func connect(to path: String) throws -> FileDescriptor {
        let fd = try retrying("socket(AF_UNIX)") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let socketFD = FileDescriptor(rawValue: fd, name: path)
        do {
            var address = try makeAddress(path)
            _ = try withUnsafePointer(to: &address) { p in
                // Safe because: p points at a sockaddr_un that lives for the call.
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    try retrying("connect \(path)") { CFerry.connect(fd, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            }
            return socketFD
        } catch {
            try? socketFD.close()
            throw error
        }
    }

    /// Shuts down both directions, waking a thread blocked in `accept` or `read` on it.
    public static func shutdown(_ socket: FileDescriptor) {
        _ = CFerry.shutdown(socket.rawValue, Int32(SHUT_RDWR))
    }

    private static func makeAddress(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { throw SystemError.syscall("socket path \(path) is too long", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { dst in
            // Safe because: bytes.count < capacity, and the rest stays zero (NUL-terminated).
            for (i, b) in bytes.enumerated() { dst[i] = b }
        }
        return address
    }
}

/// Small process-level facts.
public enum ProcessInfoRaw {
    /// This process's id (`getpid`).
    public static var pid: Int32 { getpid() }
}

extension UnixSocket {
    /// Sends one tag byte and, when given, a file descriptor (SCM_RIGHTS).
    public static func send(tag: UInt8, descriptor: FileDescriptor?, over socket: FileDescriptor) throws {
        if let descriptor {
            _ = try retrying("sendmsg(SCM_RIGHTS) \(socket.name)") { cferry_send_fd(socket.rawValue, descriptor.rawValue, tag) }
        } else {
            try socket.write([tag])
        }
    }

    /// Receives one tag byte and the descriptor sent with it, if any. Nil at end of stream.
    public static func receive(over socket: FileDescriptor) throws -> (tag: UInt8, descriptor: FileDescriptor?)? {
        var fd: Int32 = -1
        var tag: UInt8 = 0
        let n = try retrying("recvmsg(SCM_RIGHTS) \(socket.name)") { cferry_recv_fd(socket.rawValue, &fd, &tag) }
        if n == 0 { return nil }
        return (tag, fd >= 0 ? FileDescriptor(rawValue: fd, name: "received descriptor") : nil)
    }
}

extension ProcessInfoRaw {
    /// Clears the signal mask. A process started from a multithreaded parent (Foundation's
    /// `Process` from a Swift program) inherits blocked signals; a long-lived helper must still
    /// die on SIGTERM. The corresponding C function is `sigprocmask`.
    public static func unblockAllSignals() {
        var empty = sigset_t()
        sigemptyset(&empty)
        sigprocmask(SIG_SETMASK, &empty, nil)
    }
}
