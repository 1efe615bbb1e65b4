import Synchronization

/// Body buffers of one streaming download, handed back by its consumers once they are done
/// with a piece and reused by curl's receiving side for the next.
///
/// Without it every megabyte goes into a freshly allocated buffer which, freed on another
/// thread, glibc returns to the kernel in turn: a 200 MB pull then faults in tens of
/// megabytes page by page and its threads contend for the allocator (measured: 25 ms of a
/// 0.21 s transfer in a C client built both ways).
final class PieceBufferPool: Sendable {
    /// Bytes every pooled buffer can hold without growing.
    let pieceBytes: Int
    private let limit: Int
    private let free = Mutex<[[UInt8]]>([])

    /// Keeps at most `limit` idle buffers of at least `pieceBytes` each.
    init(pieceBytes: Int = CurlRequestSpec.defaultPieceBytes, limit: Int) {
        self.pieceBytes = pieceBytes
        self.limit = max(1, limit)
    }

    /// Buffers waiting to be reused.
    var idleCount: Int { free.withLock { $0.count } }

    /// An empty buffer with room for `pieceBytes`, the most recently returned one first (its
    /// memory is likely still in a cache); a new one when none is idle.
    func take() -> [UInt8] {
        if let buffer = free.withLock({ $0.popLast() }) { return buffer }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(pieceBytes)
        return buffer
    }

    /// Takes back a buffer nobody else holds: it is emptied (keeping its memory) and kept
    /// unless enough are idle already or it is too small to be worth keeping.
    func put(_ buffer: consuming [UInt8]) {
        var buffer = buffer
        guard buffer.capacity >= pieceBytes else { return }
        buffer.removeAll(keepingCapacity: true)
        free.withLock { idle in
            if idle.count < limit { idle.append(buffer) }
        }
    }
}
