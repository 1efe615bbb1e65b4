internal import CFerry

/// The service manager's notification protocol (`sd_notify(3)`) without libsystemd: one
/// datagram per message, sent to the `AF_UNIX` socket named by `$NOTIFY_SOCKET` (a path, or an
/// abstract name written with a leading `@`), with file descriptors attached as `SCM_RIGHTS`
/// for `FDSTORE=1`.
///
/// The message is newline-separated `KEY=VALUE` assignments: `READY=1`, `STATUS=…`,
/// `WATCHDOG=1`, `STOPPING=1`, `FDSTORE=1` + `FDNAME=…` (see systemd's `sd_notify(3)`).
public struct SystemdNotifier: Sendable {
    /// The socket address as `$NOTIFY_SOCKET` spells it.
    public let socketAddress: String

    /// A notifier for `address` (`/run/systemd/notify` or `@abstract-name`).
    public init(socketAddress: String) {
        self.socketAddress = socketAddress
    }

    /// The notifier systemd asked for in the environment, or nil when not started by a service
    /// manager that listens (no `$NOTIFY_SOCKET`).
    public static func fromEnvironment() -> SystemdNotifier? {
        guard let value = Environment.get("NOTIFY_SOCKET"), !value.isEmpty else { return nil }
        return SystemdNotifier(socketAddress: value)
    }

    /// Sends `assignments` (e.g. `["READY=1", "STATUS=serving 3 mounts"]`) with `descriptors`
    /// attached. The corresponding C functions are `socket(AF_UNIX, SOCK_DGRAM)` and `sendmsg`.
    public func notify(_ assignments: [String], descriptors: [FileDescriptor] = []) throws {
        let message = Array(assignments.joined(separator: "\n").utf8)
        var (address, length) = try UnixAddress.make(socketAddress)
        let fd = try retrying("socket(AF_UNIX, SOCK_DGRAM)") {
            socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        defer { _ = CFerry.close(fd) }
        var control = ControlMessage.rights(descriptors.map(\.rawValue))
        var payload = message
        _ = try withUnsafeMutablePointer(to: &address) { addressPointer in
            try payload.withUnsafeMutableBytes { payloadBytes in
                try control.withUnsafeMutableBytes { controlBytes in
                    // Safe because: every pointer below refers to a local that outlives sendmsg.
                    var vector = iovec(iov_base: payloadBytes.baseAddress, iov_len: payloadBytes.count)
                    return try withUnsafeMutablePointer(to: &vector) { vectorPointer in
                        var header = msghdr()
                        header.msg_name = UnsafeMutableRawPointer(addressPointer)
                        header.msg_namelen = length
                        header.msg_iov = vectorPointer
                        header.msg_iovlen = 1
                        header.msg_control = controlBytes.isEmpty ? nil : controlBytes.baseAddress
                        header.msg_controllen = controlBytes.count
                        return try retrying("sendmsg \(socketAddress) (\(assignments.first ?? ""))") {
                            sendmsg(fd, &header, Int32(MSG_NOSIGNAL))
                        }
                    }
                }
            }
        }
    }
}

/// Descriptors a service manager passed at start (`sd_listen_fds_with_names(3)`): fds
/// 3 ..< 3 + `$LISTEN_FDS`, named by the colon-separated `$LISTEN_FDNAMES`, valid only when
/// `$LISTEN_PID` is this process (the variables are inherited by children otherwise).
public enum SystemdListenDescriptors {
    /// The first passed descriptor (`SD_LISTEN_FDS_START`).
    public static let firstDescriptor: Int32 = 3

    /// Parses the three variables. Pure, for tests; `take()` applies it to this process.
    /// Returns `[]` when the variables are absent, meant for another process, or malformed.
    public static func parse(listenPID: String?, listenFDs: String?, listenFDNames: String?, ownPID: Int32) -> [(name: String, rawValue: Int32)] {
        guard let listenPID, let pid = Int32(listenPID), pid == ownPID,
              let listenFDs, let count = Int32(listenFDs), count > 0, count < 4096 else { return [] }
        let names = listenFDNames.map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) } ?? []
        return (0..<count).map { i in
            let name = Int(i) < names.count && !names[Int(i)].isEmpty ? names[Int(i)] : "unknown"
            return (name, firstDescriptor + i)
        }
    }

    /// Takes the descriptors passed to this process: marks them close-on-exec and removes the
    /// variables from the environment so children do not see them.
    public static func take() -> [(name: String, fd: FileDescriptor)] {
        let passed = parse(listenPID: Environment.get("LISTEN_PID"), listenFDs: Environment.get("LISTEN_FDS"),
                           listenFDNames: Environment.get("LISTEN_FDNAMES"), ownPID: getpid())
        for variable in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(variable) }
        return passed.compactMap { entry in
            // A number systemd promised but that is not open is skipped, not trusted.
            guard cferry_fcntl_int(entry.rawValue, F_SETFD, FD_CLOEXEC) == 0 else { return nil }
            return (entry.name, FileDescriptor(rawValue: entry.rawValue, name: "\(entry.name) (from the service manager)"))
        }
    }
}

/// The service manager's watchdog (`sd_watchdog_enabled(3)`): the interval within which
/// `WATCHDOG=1` must arrive, from `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, when set, must be us).
public enum SystemdWatchdog {
    /// Parses the variables; nil when the watchdog is off or meant for another process.
    public static func interval(watchdogUSec: String?, watchdogPID: String?, ownPID: Int32) -> UInt64? {
        guard let watchdogUSec, let usec = UInt64(watchdogUSec), usec > 0 else { return nil }
        if let watchdogPID, let pid = Int32(watchdogPID), pid != ownPID { return nil }
        return usec
    }

    /// The watchdog interval in microseconds asked of this process, or nil.
    public static func intervalFromEnvironment() -> UInt64? {
        interval(watchdogUSec: Environment.get("WATCHDOG_USEC"), watchdogPID: Environment.get("WATCHDOG_PID"), ownPID: getpid())
    }
}

/// A datagram socket bound to a path, receiving messages with descriptors: what a service
/// manager does on its side of `$NOTIFY_SOCKET` (tests and `ferry` use it to stand in for one).
public final class NotifyListener: Sendable {
    public let path: String
    private let descriptor: FileDescriptor

    /// Binds a datagram socket at `path` (replacing a stale one). The corresponding C functions
    /// are `socket(AF_UNIX, SOCK_DGRAM)`, `bind` and `setsockopt(SO_PASSCRED)`.
    public init(path: String) throws {
        self.path = path
        let fd = try retrying("socket(AF_UNIX, SOCK_DGRAM)") {
            socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        descriptor = FileDescriptor(rawValue: fd, name: path)
        do {
            unlink(path)
            var (address, length) = try UnixAddress.make(path)
            _ = try withUnsafePointer(to: &address) { p in
                // Safe because: p points at a sockaddr_un that lives for the call.
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    try retrying("bind \(path)") { bind(fd, sa, length) }
                }
            }
        } catch {
            try? descriptor.close()
            throw error
        }
    }

    /// One received message: its text and the descriptors that came with it (close-on-exec,
    /// owned by the caller).
    public struct Message: Sendable {
        public var text: String
        public var descriptors: [FileDescriptor]
        /// The `KEY=VALUE` assignments, split at newlines.
        public var assignments: [String] { text.split(separator: "\n").map(String.init) }
    }

    /// Waits up to `timeoutMilliseconds` for a message; nil on timeout.
    /// The corresponding C functions are `poll` and `recvmsg`.
    public func receive(timeoutMilliseconds: Int32) throws -> Message? {
        var p = pollfd(fd: descriptor.rawValue, events: Int16(POLLIN), revents: 0)
        let ready = try retrying("poll \(path)") { CFerry.poll(&p, 1, timeoutMilliseconds) }
        if ready == 0 { return nil }
        var payload = [UInt8](repeating: 0, count: 4096)
        var control = [UInt8](repeating: 0, count: ControlMessage.space(forDescriptors: 64))
        let (received, controlLength) = try payload.withUnsafeMutableBytes { payloadBytes in
            try control.withUnsafeMutableBytes { controlBytes in
                // Safe because: the iovec and control pointers refer to locals that outlive recvmsg.
                var vector = iovec(iov_base: payloadBytes.baseAddress, iov_len: payloadBytes.count)
                return try withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var header = msghdr()
                    header.msg_iov = vectorPointer
                    header.msg_iovlen = 1
                    header.msg_control = controlBytes.baseAddress
                    header.msg_controllen = controlBytes.count
                    let n = try retrying("recvmsg \(path)") { recvmsg(descriptor.rawValue, &header, Int32(MSG_CMSG_CLOEXEC)) }
                    return (n, header.msg_controllen)
                }
            }
        }
        let descriptors = ControlMessage.parseRights(control[0..<min(controlLength, control.count)])
            .map { FileDescriptor(rawValue: $0, name: "descriptor from \(path)") }
        return Message(text: String(decoding: payload[0..<received], as: UTF8.self), descriptors: descriptors)
    }

    /// Closes the socket and removes its file.
    public func close() {
        try? descriptor.close()
        unlink(path)
    }
}

/// `struct sockaddr_un` for a path or (leading `@`) an abstract name, with the length to pass.
enum UnixAddress {
    static func make(_ name: String) throws -> (sockaddr_un, socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            throw SystemError.invalidArgument("socket address \(name)", reason: "empty or longer than \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { dst in
            // Safe because: bytes.count < capacity; the rest stays zero.
            for (i, b) in bytes.enumerated() { dst[i] = b }
        }
        // sun_path follows the 2-byte sun_family. An abstract name's length is exact (no NUL);
        // a path's includes its terminating NUL.
        let pathOffset = MemoryLayout<sa_family_t>.size
        return (address, socklen_t(pathOffset + bytes.count + (abstract ? 0 : 1)))
    }
}

/// Ancillary data carrying descriptors: one `struct cmsghdr` (16 bytes on LP64: `cmsg_len`
/// size_t at 0, `cmsg_level` int at 8, `cmsg_type` int at 12) followed by the int fds,
/// padded to 8 bytes (`CMSG_SPACE`). Encoded by hand because `CMSG_*` are C macros.
enum ControlMessage {
    static let headerSize = 16

    static func space(forDescriptors count: Int) -> Int { headerSize + (count * 4 + 7) / 8 * 8 }

    /// The control buffer for `SCM_RIGHTS` with `fds`; empty when there are none.
    static func rights(_ fds: [Int32]) -> [UInt8] {
        guard !fds.isEmpty else { return [] }
        var out = [UInt8](repeating: 0, count: space(forDescriptors: fds.count))
        store(UInt64(headerSize + 4 * fds.count), at: 0, into: &out)
        store(UInt32(bitPattern: SOL_SOCKET), at: 8, into: &out)
        store(UInt32(bitPattern: Int32(SCM_RIGHTS)), at: 12, into: &out)
        for (i, fd) in fds.enumerated() { store(UInt32(bitPattern: fd), at: headerSize + 4 * i, into: &out) }
        return out
    }

    /// The descriptors of every `SCM_RIGHTS` message in `control`.
    static func parseRights(_ control: ArraySlice<UInt8>) -> [Int32] {
        let bytes = Array(control)
        var fds: [Int32] = []
        var offset = 0
        while offset + headerSize <= bytes.count {
            let length = Int(load(UInt64.self, at: offset, from: bytes))
            guard length >= headerSize, offset + length <= bytes.count else { break }
            let level = Int32(bitPattern: load(UInt32.self, at: offset + 8, from: bytes))
            let type = Int32(bitPattern: load(UInt32.self, at: offset + 12, from: bytes))
            if level == SOL_SOCKET && type == Int32(SCM_RIGHTS) {
                for i in 0..<(length - headerSize) / 4 {
                    fds.append(Int32(bitPattern: load(UInt32.self, at: offset + headerSize + 4 * i, from: bytes)))
                }
            }
            offset += (length + 7) / 8 * 8
        }
        return fds
    }

    // The kernel reads cmsghdr in the host's byte order (little-endian on x86-64 and arm64).
    private static func store<T: FixedWidthInteger>(_ value: T, at offset: Int, into bytes: inout [UInt8]) {
        let native = Host.isLittleEndian ? value : value.byteSwapped
        for i in 0..<MemoryLayout<T>.size { bytes[offset + i] = UInt8(truncatingIfNeeded: native >> (8 * i)) }
    }

    private static func load<T: FixedWidthInteger>(_: T.Type, at offset: Int, from bytes: [UInt8]) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + i]) << (8 * i) }
        return Host.isLittleEndian ? value : value.byteSwapped
    }
}

enum Host {
    static let isLittleEndian = 1.littleEndian == 1
}

/// Reading the process environment without Foundation.
public enum Environment {
    /// `getenv(name)`, or nil.
    public static func get(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}
