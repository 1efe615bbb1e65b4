import Dispatch
import FerrySystem
import OCI
import Synchronization

/// Writes a downloading blob to its file and hashes it, each on a serial queue of its own, so
/// the thread receiving from the network only hands pieces over and the three run on separate
/// cores (at most `slots` pieces wait for each queue). A long plain-HTTP body can instead be
/// spliced into the file by the kernel and hashed from the page cache (`receive(from:…)`).
///
/// Used by one transfer at a time from curl's callback thread; `digest()` waits for the queues.
final class StreamingBlobFile {
    /// The file and the hash state, each touched only on its own queue once created.
    private final class Output: @unchecked Sendable {
        // Safe because: after init, file and closed are used only on `writeQueue` (or inside its
        // `sync`), except that `receive(from:…)` splices into the file's descriptor on the
        // producer's thread after a `sync` has emptied the write queue, and nothing is queued
        // until it returns (the producer is that thread); hasher is used only on `hashQueue`; the
        // failure is behind its own lock.
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
    /// Bytes handed over so far (appended or spliced), where the next ones go in the file.
    private var length: UInt64 = 0
    /// Mappings made for hashing spliced bytes, unmapped after `close()`.
    private var mappings: [FileMapping] = []
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
        length += UInt64(piece.count)
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

    /// Moves the next `count` bytes of the blob from `socket` straight into the file inside the
    /// kernel (`SocketSplicer`) and hashes them from the page cache through a mapping of the
    /// file, on the hash queue after the pieces appended before. `landed` is told each time more
    /// bytes are in the file (how many). Returns false, having taken nothing, when the socket
    /// cannot be spliced. `stall` throws to give up while no data comes (told for how long).
    ///
    /// On failure the file keeps (and the hash has) exactly the bytes that landed, so a resumed
    /// request carries on after them.
    func receive(from socket: Int32, count: UInt64, stall: (Duration) throws -> Void, landed: (UInt64) -> Void) throws -> Bool {
        if let failure = pendingFailure() { throw failure }
        let output = self.output, path = self.path
        let start = length, end = start + count
        // The mapping may only be read where the file has bytes: the file is made its final
        // length first (the spliced bytes then fill it), and cut back to what landed on failure.
        try writeQueue.sync { try ioCall(path) { try output.file.truncate(to: end) } }
        var reached = start
        var hashed = start
        do {
            let mapping = try ioCall(path) { try FileMapping(path: path, length: Int(end)) }
            mappings.append(mapping)
            let splicer = try ioCall(path) { try SocketSplicer() }
            // Splicing waits while a few stretches are still to be hashed: on two cores the
            // receiving side would otherwise take the hasher's share and leave it a backlog to
            // finish alone, one core idle.
            let stretchesAhead = DispatchSemaphore(value: Self.stretchesAhead)
            func hashLanded() {
                guard reached > hashed else { return }
                let range = Int(hashed)..<Int(reached)
                hashed = reached
                stretchesAhead.wait()
                hashQueue.async {
                    mapping.hash(range, into: output.hasher)
                    stretchesAhead.signal()
                }
            }
            defer { hashLanded() }
            try splicer.move(from: socket, to: output.file, at: start, count: count,
                             idle: { milliseconds in try stall(.milliseconds(milliseconds)) },
                             landed: { offset in
                                 let new = offset - reached
                                 reached = offset
                                 // Hashed in stretches of 2 MiB: one queue hand-off each, and at most 16 MiB
                                 // left to hash when the last byte lands.
                                 if reached - hashed >= Self.hashStretch || reached == end { hashLanded() }
                                 landed(new)
                             })
        } catch let error as SocketSpliceError {
            try settle(at: reached, path: path)
            switch error {
            case .unsupported: return false
            case .peerClosed: throw CurlFailure.bodyCutShort(missing: end - reached)
            case .receiveFailed: throw CurlFailure.receiveFailed("\(error)")
            }
        } catch let error as SystemError {
            try? settle(at: reached, path: path)
            throw RegistryError.io(path: path, reason: "\(error)")
        } catch {
            try? settle(at: reached, path: path)
            throw error
        }
        try settle(at: reached, path: path)
        return true
    }

    /// Bytes hashed from the mapping per hash-queue job.
    private static let hashStretch: UInt64 = 2 << 20
    /// Stretches landed but not yet hashed before splicing waits.
    private static let stretchesAhead = 8

    /// After a takeover: the file ends, and later appends go, where the landed bytes end.
    private func settle(at offset: UInt64, path: String) throws {
        let output = self.output
        length = offset
        try writeQueue.sync {
            try ioCall(path) {
                try output.file.truncate(to: offset)
                _ = try output.file.seek(to: offset)
            }
        }
    }

    /// Empties the file and the hash (the server resent the blob from its start).
    func restart() throws {
        let output = self.output, path = self.path
        try writeQueue.sync {
            if let failure = output.failure.withLock({ $0 }) { throw failure }
            try ioCall(path) { try output.file.truncate(to: 0); _ = try output.file.seek(to: 0) }
        }
        length = 0
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
        // Unmapping a large mapping takes milliseconds (every page's entry is torn down): done
        // on another thread, so the blob is ready as soon as it is verified.
        let retired = mappings
        mappings = []
        if !retired.isEmpty { DispatchQueue.global(qos: .utility).async { withExtendedLifetime(retired) {} } }
    }

    private func pendingFailure() -> (any Error)? { output.failure.withLock { $0 } }
}
