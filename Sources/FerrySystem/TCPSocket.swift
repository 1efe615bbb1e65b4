internal import CFerry

/// TCP listening sockets, for ferryd's peer chunk server and its optional metrics listener.
public enum TCPSocket {
    /// Listens on `host:port` (an IPv4 or IPv6 literal; `port` 0 picks a free port).
    /// Returns the socket and the port it is bound to.
    /// The corresponding C functions are `getaddrinfo`, `socket`, `setsockopt(SO_REUSEADDR)`,
    /// `bind`, `listen` and `getsockname`.
    public static func listen(host: String, port: UInt16, backlog: Int32 = UnixSocket.defaultBacklog) throws -> (socket: FileDescriptor, port: UInt16) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let info = list else {
            throw SystemError.invalidArgument("listen address \(host):\(port)", reason: "not a numeric IPv4/IPv6 address")
        }
        defer { freeaddrinfo(list) }
        // Safe because: info is the first entry of the list getaddrinfo returned; freed after use.
        let entry = info.pointee
        let fd = try retrying("socket(\(host))") { socket(entry.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let socketFD = FileDescriptor(rawValue: fd, name: "tcp \(host):\(port)")
        do {
            var one: Int32 = 1
            _ = try retrying("setsockopt(SO_REUSEADDR)") {
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            }
            _ = try retrying("bind \(host):\(port)") { bind(fd, entry.ai_addr, entry.ai_addrlen) }
            _ = try retrying("listen \(host):\(port)") { CFerry.listen(fd, backlog) }
            return (socketFD, try boundPort(fd))
        } catch {
            try? socketFD.close()
            throw error
        }
    }

    private static func boundPort(_ fd: Int32) throws -> UInt16 {
        guard let port = try port(of: fd, peer: false) else {
            throw SystemError.invalidArgument("listening socket", reason: "not an IPv4 or IPv6 socket")
        }
        return port
    }

    /// The local and the remote port of a connected IPv4/IPv6 socket; nil for any other
    /// descriptor. The corresponding C functions are `getsockname` and `getpeername`.
    public static func ports(of fd: Int32) -> (local: UInt16, peer: UInt16)? {
        guard let local = try? port(of: fd, peer: false), let peer = try? port(of: fd, peer: true) else { return nil }
        return (local, peer)
    }

    /// The port of the socket's own (or its peer's) address; nil when it is not IPv4/IPv6.
    private static func port(of fd: Int32, peer: Bool) throws -> UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { p in
            // Safe because: p points at a sockaddr_storage large enough for any address family.
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try retrying(peer ? "getpeername" : "getsockname") { peer ? getpeername(fd, sa, &length) : getsockname(fd, sa, &length) }
            }
        }
        let family = Int32(storage.ss_family)
        return withUnsafePointer(to: &storage) { p in
            // Safe because: the family field says which sockaddr the storage holds.
            if family == AF_INET6 {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            if family == AF_INET {
                return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
            }
            return nil
        }
    }
}
