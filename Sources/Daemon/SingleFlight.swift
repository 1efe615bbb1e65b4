import Synchronization

/// Runs at most one operation per key at a time: callers that ask for a key while its operation
/// runs await that operation's result instead of starting their own (concurrent mounts of one
/// image share one manifest fetch and one bootstrap download).
///
/// The table's lock is held only to look up or insert a task, never across an await.
public final class SingleFlight<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let running = Mutex<[Key: Task<Value, any Error>]>([:])

    public init() {}

    /// The result of the operation running for `key`, or of `operation` started now.
    /// A caller's cancellation does not cancel an operation other callers share.
    public func value(for key: Key, _ operation: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let task = running.withLock { table -> Task<Value, any Error> in
            if let current = table[key] { return current }
            let started = Task { try await operation() }
            table[key] = started
            return started
        }
        let result = await task.result
        running.withLock { table in
            if table[key] == task { table[key] = nil }
        }
        return try result.get()
    }

    /// Keys whose operations are running (for status and tests).
    public var keysInFlight: [Key] { running.withLock { Array($0.keys) } }
}
