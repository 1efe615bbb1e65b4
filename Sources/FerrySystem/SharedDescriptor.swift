import Synchronization

/// A descriptor that concurrent users share and that is closed only after the last of them is
/// done: retiring it (the kernel withdrew the object, the cache file was evicted) stops new uses,
/// and the close waits for uses in progress. Closing at once would let the number be reused
/// under a fill still writing to it — the fill's bytes would land in whatever file got the number.
public final class SharedDescriptor: Sendable {
    public let descriptor: FileDescriptor
    private struct State {
        var users = 0
        var retired = false
        var closed = false
    }
    private let state = Mutex(State())

    public init(_ descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// Registers a use; false once the descriptor is retired (then it must not be used). Every
    /// successful `acquire` needs one `release`.
    public func acquire() -> Bool {
        state.withLock { s in
            guard !s.retired else { return false }
            s.users += 1
            return true
        }
    }

    /// Ends a use; closes the descriptor if it was retired and this was the last use.
    public func release() {
        let close = state.withLock { s -> Bool in
            s.users -= 1
            guard s.retired, s.users == 0, !s.closed else { return false }
            s.closed = true
            return true
        }
        if close { try? descriptor.close() }
    }

    /// No new uses; the descriptor closes now if none is in progress, else with the last `release`.
    public func retire() {
        let close = state.withLock { s -> Bool in
            s.retired = true
            guard s.users == 0, !s.closed else { return false }
            s.closed = true
            return true
        }
        if close { try? descriptor.close() }
    }

    /// Whether the descriptor has been closed.
    public var isClosed: Bool { state.withLock { $0.closed } }
}
