internal import CFerry

/// One completed io_uring operation.
public struct IORingCompletion: Sendable, Equatable {
    /// The token given when the operation was queued.
    public var token: UInt64
    /// The kernel's result: bytes transferred, poll mask, or `-errno` on failure.
    public var result: Int32

    public init(token: UInt64, result: Int32) {
        self.token = token
        self.result = result
    }
}

/// An io_uring instance (liburing) used from one thread.
///
/// Operations are queued with a caller-chosen `token` (the SQE's user_data), submitted with
/// `submit()` and collected with `completions(waitingFor:)`. The ring keeps every buffer of an
/// in-flight operation alive until its completion has been collected, so a caller cannot free
/// memory the kernel is still writing into. Tokens must be unique among in-flight operations.
///
/// Not thread-safe: the ring, its buffers and its tokens belong to the thread that drives it.
public final class IORing {
    private var ring = io_uring()
    private var inFlight: [UInt64: AlignedBuffer?] = [:]
    /// Operations queued but not yet handed to the kernel.
    public private(set) var pending = 0
    /// The number of submission queue entries.
    public let entries: UInt32

    /// Sets up a ring with `entries` submission slots. The corresponding C function is
    /// `io_uring_queue_init`.
    public init(entries: UInt32) throws {
        self.entries = entries
        let rc = io_uring_queue_init(entries, &ring, 0)
        if rc < 0 { throw SystemError.syscall("io_uring_queue_init(\(entries))", errno: -rc) }
    }

    deinit { io_uring_queue_exit(&ring) }

    /// Operations submitted or queued whose completion has not been collected yet.
    public var inFlightCount: Int { inFlight.count }

    /// Queues a read of `count` bytes (default: the whole buffer) from `fd` at `offset` into
    /// `buffer`. `offset` of `UInt64.max` means the file's current position (for character
    /// devices such as `/dev/cachefiles`).
    public func read(_ fd: FileDescriptor, into buffer: AlignedBuffer, count: Int? = nil, at offset: UInt64, token: UInt64) throws {
        let n = count ?? buffer.count
        guard n >= 0, n <= buffer.count else {
            throw SystemError.invalidArgument("io_uring read of \(n) bytes", reason: "buffer holds \(buffer.count) bytes")
        }
        let sqe = try nextEntry(token: token)
        buffer.withRawPointer { base in
            // Safe because: the ring keeps buffer alive in inFlight until the completion is reaped.
            io_uring_prep_read(sqe, fd.rawValue, base, UInt32(n), offset)
        }
        queued(sqe, token: token, buffer: buffer)
    }

    /// Queues a write of the first `count` bytes of `buffer` to `fd` at `offset`.
    public func write(_ fd: FileDescriptor, from buffer: AlignedBuffer, count: Int, at offset: UInt64, token: UInt64) throws {
        guard count >= 0, count <= buffer.count else {
            throw SystemError.invalidArgument("io_uring write of \(count) bytes", reason: "buffer holds \(buffer.count) bytes")
        }
        let sqe = try nextEntry(token: token)
        buffer.withRawPointer { base in
            // Safe because: the ring keeps buffer alive in inFlight until the completion is reaped.
            io_uring_prep_write(sqe, fd.rawValue, base, UInt32(count), offset)
        }
        queued(sqe, token: token, buffer: buffer)
    }

    /// Queues a one-shot poll for `events` (default `POLLIN`, 0x001) on `fd`; the result is the mask.
    public func poll(_ fd: FileDescriptor, events: Int16 = 0x001, token: UInt64) throws {
        let sqe = try nextEntry(token: token)
        io_uring_prep_poll_add(sqe, fd.rawValue, UInt32(UInt16(bitPattern: events)))
        queued(sqe, token: token, buffer: nil)
    }

    /// Hands queued operations to the kernel; returns how many it took. The corresponding C
    /// function is `io_uring_submit`.
    @discardableResult
    public func submit() throws -> Int {
        while true {
            let rc = io_uring_submit(&ring)
            if rc == -EINTR { continue }
            if rc < 0 { throw SystemError.syscall("io_uring_submit", errno: -rc) }
            pending = max(0, pending - Int(rc))
            return Int(rc)
        }
    }

    /// Submits what is queued, then collects completions: waits until at least `minimum`
    /// are available (0: only what is ready now) and returns every ready one.
    public func completions(waitingFor minimum: Int = 1) throws -> [IORingCompletion] {
        if pending > 0 { try submit() }
        var out: [IORingCompletion] = []
        if minimum > 0 {
            guard !inFlight.isEmpty else {
                throw SystemError.invalidArgument("wait for \(minimum) completions", reason: "no operation is in flight")
            }
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            while true {
                let rc = io_uring_wait_cqe_nr(&ring, &cqe, UInt32(min(minimum, inFlight.count)))
                if rc == -EINTR { continue }
                if rc < 0 { throw SystemError.syscall("io_uring_wait_cqe", errno: -rc) }
                break
            }
        }
        var cqe: UnsafeMutablePointer<io_uring_cqe>?
        while io_uring_peek_cqe(&ring, &cqe) == 0, let entry = cqe {
            // Safe because: entry points at a completion owned by the ring until cqe_seen.
            let token = io_uring_cqe_get_data64(entry)
            out.append(IORingCompletion(token: token, result: entry.pointee.res))
            io_uring_cqe_seen(&ring, entry)
            inFlight.removeValue(forKey: token)
        }
        return out
    }

    private func nextEntry(token: UInt64) throws -> UnsafeMutablePointer<io_uring_sqe> {
        guard inFlight[token] == nil else {
            throw SystemError.invalidArgument("io_uring token \(token)", reason: "already in flight")
        }
        if let sqe = io_uring_get_sqe(&ring) { return sqe }
        // The submission queue is full: hand it to the kernel and try once more.
        try submit()
        guard let sqe = io_uring_get_sqe(&ring) else { throw SystemError.syscall("io_uring_get_sqe", errno: EBUSY) }
        return sqe
    }

    private func queued(_ sqe: UnsafeMutablePointer<io_uring_sqe>, token: UInt64, buffer: AlignedBuffer?) {
        io_uring_sqe_set_data64(sqe, token)
        inFlight[token] = .some(buffer)
        pending += 1
    }
}
