public import OCI

/// One step of a blob transfer, for progress displays.
public struct TransferEvent: Sendable {
    public enum Direction: String, Sendable { case pull, push }

    public enum Phase: Sendable, Equatable {
        /// The transfer begins; `total` is the blob size when known.
        case started(total: UInt64?)
        /// `bytes` have moved so far (monotonic within an attempt; a retry may start over).
        case progressed(bytes: UInt64)
        /// Done: `bytes` moved over the network (0 when the registry already had the blob or
        /// mounted it).
        case finished(bytes: UInt64, skipped: Bool)
        /// Given up after the retry policy.
        case failed
    }

    public var direction: Direction
    public var repository: String
    public var digest: Digest
    public var phase: Phase
}

/// Receives the progress of blob pulls (`fetchBlob`) and pushes (`pushBlob`). Called from the
/// transfer's own thread, possibly for several blobs at once, and often: keep it cheap.
public protocol TransferObserver: Sendable {
    func observe(_ event: TransferEvent)
}
