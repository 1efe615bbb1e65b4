internal import CFerry

/// A Linux eventfd: a counter other threads bump to wake a thread that polls it (here: the
/// io_uring thread of the fscache backend). The corresponding C function is `eventfd`.
public final class EventFD: Sendable {
    public let descriptor: FileDescriptor

    public init() throws {
        let fd = try retrying("eventfd") { eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK)) }
        descriptor = FileDescriptor(rawValue: fd, name: "eventfd")
    }

    deinit { try? descriptor.close() }

    /// Adds one to the counter, making the fd readable.
    public func signal() {
        var one: UInt64 = 1
        _ = CFerry.write(descriptor.rawValue, &one, 8)
    }

    /// Resets the counter to zero (no-op when it is already zero).
    public func drain() {
        var value: UInt64 = 0
        _ = CFerry.read(descriptor.rawValue, &value, 8)
    }
}
