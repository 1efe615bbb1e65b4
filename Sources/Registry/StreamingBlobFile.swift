import Dispatch
import FerrySystem
import OCI
import Synchronization

/// Writes a downloading blob to its file and hashes it, each on a serial queue of its own, so
/// the thread receiving from the network only hands pieces over and the three run on separate
/// cores (at most `slots` pieces wait for each queue).
///
/// Used by one transfer at a time from curl's callback thread; `digest()` waits for the queue.
final class StreamingBlobFile {
    /// The file and the hash state, each touched only on its own queue once created.
    private final class Output: @unchecked Sendable {
        // Safe because: after init, file and closed are used only on `writeQueue` and hasher only
        // on `hashQueue` (both serial, or inside their `sync`); the failure is behind its own lock.
        let file: FileDescriptor
        var closed = false
        var hasher = SHA256()
        let failure = Mutex<(any Error)?>(nil)
        init(file: FileDescriptor) { self.file = file }
    }

    /// A piece shared by the writer and the hasher; whichever finishes with it last gives its
    /// buffer back to the pool.
    private final class SharedPiece: @unchecked Sendable {
        // Safe because: both users only read `bytes` until each has called `release`; the last
        // one (the atomic count orders it after the other's reads) alone takes it out.
        private var bytes: ArraySlice<UInt8>?
        private let users = Atomic<Int>(2)
        init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }
        var piece: ArraySlice<UInt8> { bytes ?? [] }
        func release(to pool: PieceBufferPool) {
            guard users.subtract(1, ordering: .acquiringAndReleasing).newValue == 0, let slice = bytes.take(),
                  slice.startIndex == 0 else { return }
            // A slice spanning its whole buffer makes an array that shares it; consumed, the slice
            // lets go of the buffer, so the pool gets the only reference and empties it in place.
            pool.put(Array(consume slice))
        }
    }

    let path: String
    /// The buffers curl's receiving side should gather this file's pieces in.
    let pieceBuffers: PieceBufferPool
    private let output: Output
    private let writeQueue = DispatchQueue(label: "ferry.blob-download-write")
    private let hashQueue = DispatchQueue(label: "ferry.blob-download-hash")
    private let writeSlots: DispatchSemaphore
    private let hashSlots: DispatchSemaphore

    /// Creates (truncates) the file at `path`; pieces gathered in `pieceBuffers` hold `pieceBytes`.
    init(path: String, slots: Int = 8, pieceBytes: Int = CurlRequestSpec.defaultPieceBytes) throws {
        self.path = path
        output = Output(file: try ioCall(path) { try FileDescriptor.open(path, .createTruncate) })
        writeSlots = DispatchSemaphore(value: max(1, slots))
        hashSlots = DispatchSemaphore(value: max(1, slots))
        // Every piece in a queue, plus the one being received, plus one spare.
        pieceBuffers = PieceBufferPool(pieceBytes: pieceBytes, limit: 2 * max(1, slots) + 2)
    }

    /// Queues `piece` to be written and hashed; throws an earlier write failure.
    func append(_ piece: ArraySlice<UInt8>) throws {
        if let failure = pendingFailure() { throw failure }
        let output = self.output, path = self.path
        let writeSlots = self.writeSlots, hashSlots = self.hashSlots, pool = pieceBuffers
        let shared = SharedPiece(piece)
        writeSlots.wait()
        writeQueue.async {
            defer { writeSlots.signal(); shared.release(to: pool) }
            guard output.failure.withLock({ $0 == nil }) else { return }
            do { try ioCall(path) { try output.file.write(shared.piece) } } catch {
                output.failure.withLock { $0 = error }
            }
        }
        hashSlots.wait()
        hashQueue.async {
            defer { hashSlots.signal(); shared.release(to: pool) }
            output.hasher.update(shared.piece)
        }
    }

    /// Empties the file and the hash (the server resent the blob from its start).
    func restart() throws {
        let output = self.output, path = self.path
        try writeQueue.sync {
            if let failure = output.failure.withLock({ $0 }) { throw failure }
            try ioCall(path) { try output.file.truncate(to: 0); _ = try output.file.seek(to: 0) }
        }
        hashQueue.sync { output.hasher = SHA256() }
    }

    /// Waits for every queued piece and returns the digest of what was written.
    func digest() throws -> Digest {
        let output = self.output
        try writeQueue.sync {
            if let failure = output.failure.withLock({ $0 }) { throw failure }
        }
        return Digest(sha256: hashQueue.sync { output.hasher.finalize() })
    }

    /// Waits for queued pieces and closes the file (once: later calls do nothing, so a closed
    /// descriptor number that another thread reused is never closed again).
    func close() {
        let output = self.output
        hashQueue.sync {}
        writeQueue.sync {
            guard !output.closed else { return }
            output.closed = true
            try? output.file.close()
        }
    }

    private func pendingFailure() -> (any Error)? { output.failure.withLock { $0 } }
}
