internal import CFerry

/// Why `SocketSplicer.move` stopped before it had moved every byte.
public enum SocketSpliceError: Error, Sendable, CustomStringConvertible {
    /// The kernel cannot splice from this socket; nothing was taken from it.
    case unsupported(errno: Int32)
    /// The peer closed the connection after `moved` bytes.
    case peerClosed(moved: UInt64)
    /// Reading the socket failed (e.g. the connection was reset) after `moved` bytes.
    case receiveFailed(errno: Int32, moved: UInt64)

    public var description: String {
        switch self {
        case let .unsupported(errno): return "splice from the socket is not supported: \(Errno.describe(errno))"
        case let .peerClosed(moved): return "the connection closed after \(moved) bytes"
        case let .receiveFailed(errno, moved): return "receiving failed after \(moved) bytes: \(Errno.describe(errno))"
        }
    }
}

/// Moves bytes from a connected socket straight into a file inside the kernel: `splice` from
/// the socket into a pipe, then from the pipe into the file at an offset. The bytes never pass
/// through this process's memory; the kernel copies them once, into the file's page cache
/// (where `read` + `write` copy them out of the socket and back in).
///
/// One instance serves one transfer at a time; its pipe is kept between calls.
public final class SocketSplicer {
    private let pipeReadEnd: Int32
    private let pipeWriteEnd: Int32
    /// Bytes the pipe holds, i.e. the most one round moves.
    public let pipeBytes: Int

    /// Makes the pipe, asking for `pipeBytes` of room (the system may grant less: `pipe-max-size`).
    public init(pipeBytes wanted: Int = 1 << 20) throws {
        var ends: [Int32] = [-1, -1]
        try retrying("pipe2") { cferry_pipe2(&ends, O_CLOEXEC) }
        pipeReadEnd = ends[0]
        pipeWriteEnd = ends[1]
        _ = cferry_fcntl_int(pipeWriteEnd, CFERRY_F_SETPIPE_SZ, Int32(clamping: wanted))
        let granted = cferry_fcntl_int(pipeWriteEnd, CFERRY_F_GETPIPE_SZ, 0)
        pipeBytes = granted > 0 ? Int(granted) : 65536
    }

    deinit {
        CFerry.close(pipeReadEnd)
        CFerry.close(pipeWriteEnd)
    }

    /// Moves exactly `count` bytes from `socket` into `file` from `offset` on. The corresponding
    /// C function is `splice`.
    ///
    /// While the socket has nothing to read, this waits `waitMilliseconds` at a time (the
    /// socket is made blocking with that receive timeout meanwhile, then restored) and calls
    /// `idle` with the milliseconds since data last came, which throws to give up
    /// (cancellation, a stalled peer).
    /// `landed` is told the file offset up to which the bytes are in the file, after every round.
    /// A file system that cannot be spliced into gets the bytes by `read` and `pwrite` instead.
    ///
    /// Throws `SocketSpliceError.unsupported` only when nothing was taken from the socket (the
    /// caller can still read it the usual way), `.peerClosed` or `.receiveFailed` when the
    /// connection ends early, `SystemError` when writing the file fails.
    public func move(from socket: Int32, to file: FileDescriptor, at offset: UInt64, count: UInt64,
                     waitMilliseconds: Int32 = 100, idle: (Int) throws -> Void, landed: (UInt64) -> Void) throws {
        // The socket blocks for up to `waitMilliseconds` while this runs: a blocking splice keeps
        // gathering while data flows (up to the pipe's room), where a non-blocking one returns
        // each time the receive queue is empty (measured on a 202 MB blob: ~1,270 calls blocking,
        // 2,200 calls and 600 polls non-blocking).
        let flags = cferry_fcntl_int(socket, F_GETFL, 0)
        var previousTimeout = timeval()
        var timeoutLength = socklen_t(MemoryLayout<timeval>.size)
        let hadTimeout = getsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &previousTimeout, &timeoutLength) == 0
        var waitTimeout = timeval(tv_sec: Int(waitMilliseconds / 1000), tv_usec: Int(waitMilliseconds % 1000) * 1000)
        let blocking = flags >= 0 && hadTimeout
            && setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &waitTimeout, socklen_t(MemoryLayout<timeval>.size)) == 0
            && cferry_fcntl_int(socket, F_SETFL, flags & ~O_NONBLOCK) == 0
        defer {
            if flags >= 0 { _ = cferry_fcntl_int(socket, F_SETFL, flags) }
            if hadTimeout { _ = setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &previousTimeout, socklen_t(MemoryLayout<timeval>.size)) }
        }
        let socketFlags = UInt32(CFERRY_SPLICE_F_MOVE) | (blocking ? 0 : UInt32(CFERRY_SPLICE_F_NONBLOCK))
        var moved: UInt64 = 0
        var fileOffset = Int64(offset)
        var idleMilliseconds = 0
        var spliceIntoFile = true
        var bounce: [UInt8] = []
        while moved < count {
            let wanted = Int(min(UInt64(pipeBytes), count - moved))
            let got = cferry_splice(socket, pipeWriteEnd, nil, wanted, socketFlags)
            if got < 0 {
                let code = cferry_errno()
                switch code {
                case EINTR:
                    continue
                case EAGAIN:
                    // Blocking: the receive timeout passed without data. Otherwise wait in poll.
                    var ready: Int32 = 0
                    if !blocking {
                        var request = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
                        ready = CFerry.poll(&request, 1, waitMilliseconds)
                        if ready < 0 && cferry_errno() != EINTR { throw SocketSpliceError.receiveFailed(errno: cferry_errno(), moved: moved) }
                    }
                    if ready == 0 {
                        idleMilliseconds += Int(waitMilliseconds)
                        try idle(idleMilliseconds)
                    }
                    continue
                case EINVAL, ENOSYS, EOPNOTSUPP:
                    if moved == 0 { throw SocketSpliceError.unsupported(errno: code) }
                    throw SocketSpliceError.receiveFailed(errno: code, moved: moved)
                default:
                    throw SocketSpliceError.receiveFailed(errno: code, moved: moved)
                }
            }
            if got == 0 { throw SocketSpliceError.peerClosed(moved: moved) }
            idleMilliseconds = 0
            var inPipe = Int(got)
            while inPipe > 0 {
                if spliceIntoFile {
                    let put = cferry_splice(pipeReadEnd, file.rawValue, &fileOffset, inPipe, UInt32(CFERRY_SPLICE_F_MOVE))
                    if put > 0 { inPipe -= put; continue }
                    let code = put < 0 ? cferry_errno() : EIO
                    if code == EINTR { continue }
                    if code == EINVAL || code == EOPNOTSUPP { spliceIntoFile = false; continue }
                    throw SystemError.syscall("splice into \(file.name)", errno: code)
                }
                // Copy out of the pipe instead (a file system without splice support).
                if bounce.count < inPipe { bounce = [UInt8](repeating: 0, count: pipeBytes) }
                let read = try bounce.withUnsafeMutableBytes { raw in
                    // Safe because: raw has bounce.count >= inPipe bytes.
                    try retrying("read pipe") { CFerry.read(pipeReadEnd, raw.baseAddress, inPipe) }
                }
                if read == 0 { throw SystemError.syscall("read pipe", errno: EIO) }
                try file.write(bounce[0..<read], at: UInt64(fileOffset))
                fileOffset += Int64(read)
                inPipe -= read
            }
            moved += UInt64(got)
            landed(UInt64(fileOffset))
        }
    }
}

/// A read-only shared mapping of a file's first `length` bytes, for hashing bytes the kernel
/// put in the page cache without copying them out. Only bytes already in the file may be read
/// through it (a page past the end of the file faults).
public final class FileMapping: @unchecked Sendable {
    // Safe because: the mapping is read-only and never changes address or length; it is unmapped
    // in deinit, after every user (they hold the instance) is done.
    private let base: UnsafeRawPointer
    /// Bytes mapped.
    public let length: Int
    private static let pageSize = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))

    /// Maps the first `length` (> 0) bytes of the file at `path`. The corresponding C function is `mmap`.
    public init(path: String, length: Int) throws {
        guard length > 0 else { throw SystemError.invalidArgument("mapping of \(path)", reason: "nothing to map") }
        let file = try FileDescriptor.open(path, .readOnly)
        defer { try? file.close() }
        let address = mmap(nil, length, PROT_READ, MAP_SHARED, file.rawValue, 0)
        guard let address, address != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw SystemError.syscall("mmap \(path)", errno: cferry_errno())
        }
        base = UnsafeRawPointer(address)
        self.length = length
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), length) }

    /// Feeds the mapped bytes `range` into `hasher`. The range's pages are mapped in one call
    /// first (`madvise(MADV_POPULATE_READ)`, ignored where unsupported) instead of by a page
    /// fault every 16 pages while hashing (measured: 87-88 % → 89-90 % of curl's time in the
    /// registry bench's transfer).
    public func hash(_ range: Range<Int>, into hasher: SHA256) {
        precondition(range.lowerBound >= 0 && range.upperBound <= length, "range outside the mapping")
        let firstPage = range.lowerBound & ~(Self.pageSize - 1)
        _ = madvise(UnsafeMutableRawPointer(mutating: base + firstPage), range.upperBound - firstPage, CFERRY_MADV_POPULATE_READ)
        hasher.update(raw: UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count))
    }
}
