internal import CFerry
import Synchronization

/// A page-aligned buffer handed from one thread to the ring thread. Ownership moves with it:
/// the sender must not touch the buffer afterwards.
public struct TransferredBuffer: @unchecked Sendable {
    // Safe because: the sender gives the buffer up; only the ring thread uses it afterwards.
    public let buffer: AlignedBuffer
    public init(_ buffer: AlignedBuffer) { self.buffer = buffer }
}

/// One thread driving an `IORing` for many clients: it watches one message device (poll, then
/// read through the ring until it is empty) and performs writes that any thread or task asks
/// for, resuming the asker when the kernel completes them. Built for `/dev/cachefiles`: its
/// requests are read, and the data for them written into the objects' anonymous fds, through
/// the same ring.
public final class RingService: Sendable {
    private struct WriteRequest: Sendable {
        var fd: FileDescriptor
        var buffer: TransferredBuffer
        var count: Int
        var offset: UInt64
        var continuation: CheckedContinuation<Int32, Never>
    }

    private let wake: EventFD
    private let queue = Mutex<[WriteRequest]>([])
    private let stopping = Atomic<Bool>(false)
    private let entries: UInt32

    /// - Parameter entries: submission queue size; at most `entries - 4` writes are in flight.
    public init(entries: UInt32 = 64) throws {
        wake = try EventFD()
        self.entries = max(entries, 8)
    }

    /// Writes the first `count` bytes of `buffer` to `fd` at `offset` through the ring; returns
    /// the kernel's result (bytes written, or a negative errno).
    public func write(_ fd: FileDescriptor, buffer: TransferredBuffer, count: Int, at offset: UInt64) async -> Int32 {
        await withCheckedContinuation { continuation in
            queue.withLock { $0.append(WriteRequest(fd: fd, buffer: buffer, count: count, offset: offset, continuation: continuation)) }
            wake.signal()
        }
    }

    /// Makes `run` return soon.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        wake.signal()
    }

    /// Drives the ring on the calling thread until `stop()`: polls `device`, reads each message
    /// (at most `messageSize` bytes; a read of 0 bytes means none is pending) and passes it to
    /// `onMessage`, which must not block for long.
    public func run(device: FileDescriptor, messageSize: Int, onMessage: ([UInt8]) -> Void) throws {
        let ring = try IORing(entries: entries)
        let message = try AlignedBuffer(count: messageSize)
        let pollDevice: UInt64 = 1, readDevice: UInt64 = 2, pollWake: UInt64 = 3
        var nextToken: UInt64 = 16
        var writes: [UInt64: WriteRequest] = [:]
        var waiting: [WriteRequest] = []
        let maxWrites = Int(entries) - 4
        try ring.poll(device, token: pollDevice)
        try ring.poll(wake.descriptor, token: pollWake)
        defer {
            // Nobody may wait forever: writes not done are reported as cancelled.
            for request in writes.values { request.continuation.resume(returning: -ECANCELED) }
            for request in waiting + queue.withLock({ q in defer { q = [] }; return q }) {
                request.continuation.resume(returning: -ECANCELED)
            }
        }
        while !stopping.load(ordering: .relaxed) {
            for completion in try ring.completions(waitingFor: 1) {
                switch completion.token {
                case pollDevice:
                    try ring.read(device, into: message, count: messageSize, at: UInt64.max, token: readDevice)
                case readDevice:
                    if completion.result > 0 {
                        onMessage(message.bytes(0 ..< Int(completion.result)))
                        // More may be pending: read again until the device says none.
                        try ring.read(device, into: message, count: messageSize, at: UInt64.max, token: readDevice)
                    } else if completion.result == 0 || completion.result == -EAGAIN || completion.result == -EINTR {
                        try ring.poll(device, token: pollDevice)
                    } else {
                        throw SystemError.syscall("read \(device.name) through io_uring", errno: -completion.result)
                    }
                case pollWake:
                    wake.drain()
                    waiting += queue.withLock { q in defer { q = [] }; return q }
                    try ring.poll(wake.descriptor, token: pollWake)
                default:
                    if let request = writes.removeValue(forKey: completion.token) {
                        request.continuation.resume(returning: completion.result)
                    }
                }
            }
            while writes.count < maxWrites, !waiting.isEmpty {
                let request = waiting.removeFirst()
                nextToken += 1
                do {
                    try ring.write(request.fd, from: request.buffer.buffer, count: request.count, at: request.offset, token: nextToken)
                    writes[nextToken] = request
                } catch {
                    request.continuation.resume(returning: -EIO)
                }
            }
        }
    }
}
