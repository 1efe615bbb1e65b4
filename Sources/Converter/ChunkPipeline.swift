import Blob
import Dispatch

/// Hashes and compresses chunks on all cores while the caller keeps reading input, and hands
/// results back **in submission order** on the caller's thread.
///
/// The caller submits chunks with a tag; when more than `window` chunks are in flight, `submit`
/// first completes the oldest one and passes it to `commit`. So all state that `commit` touches
/// stays on one thread, the output order (and thus the blob layout) is deterministic, and
/// memory is bounded by `window` chunks.
final class ChunkPipeline<Tag> {
    /// One chunk being encoded on a worker.
    private final class Job: @unchecked Sendable {
        // `result` is written once by the worker before `done.signal()`; the owner reads it, and
        // takes `input` back, only after `done.wait()`: the semaphore orders the accesses.
        var result: Result<EncodedChunk, any Error> = .failure(CancellationError())
        /// The chunk's bytes; given back to the pipeline's free list once the chunk is committed.
        var input: [UInt8]
        let done = DispatchSemaphore(value: 0)
        init(input: [UInt8]) { self.input = input }
    }

    private let compression: ChunkCompression
    private let window: Int
    private let queue = DispatchQueue(label: "ferry.chunk-encoder", attributes: .concurrent)
    private var inFlight: [(job: Job, tag: Tag)] = []
    private var head = 0
    /// Chunk buffers whose chunks are committed, for `takeBuffer` to hand out again: reusing them
    /// keeps megabyte allocations from fragmenting the heap between small long-lived ones.
    private var freeBuffers: [[UInt8]] = []
    private let commit: (EncodedChunk, Tag) throws -> Void

    /// - Parameters:
    ///   - window: how many chunks may be in flight (memory bound: window × chunk size × ~2).
    ///   - commit: receives each encoded chunk, in submission order, on the submitting thread.
    init(compression: ChunkCompression, window: Int, commit: @escaping (EncodedChunk, Tag) throws -> Void) {
        self.compression = compression
        self.window = max(1, window)
        self.commit = commit
    }

    /// An empty buffer with at least `capacity` bytes reserved, recycled when possible.
    func takeBuffer(capacity: Int) -> [UInt8] {
        var buffer = freeBuffers.popLast() ?? []
        buffer.removeAll(keepingCapacity: true)
        buffer.reserveCapacity(capacity)
        return buffer
    }

    /// Queues `bytes` for hashing and compression.
    func submit(_ bytes: [UInt8], tag: Tag) throws {
        let job = Job(input: bytes)
        let compression = self.compression
        queue.async {
            job.result = Result { try ChunkCodec.encode(job.input, compression: compression) }
            job.done.signal()
        }
        inFlight.append((job, tag))
        while inFlight.count - head > window { try completeOldest() }
    }

    /// Completes every chunk in flight.
    func drain() throws {
        while head < inFlight.count { try completeOldest() }
        inFlight.removeAll(keepingCapacity: true)
        head = 0
    }

    private func completeOldest() throws {
        let (job, tag) = inFlight[head]
        job.done.wait()
        head += 1
        if head > 1024 {
            inFlight.removeFirst(head)
            head = 0
        }
        let result = job.result
        job.result = .failure(CancellationError())
        try commit(try result.get(), tag)
        if freeBuffers.count <= window {
            var input: [UInt8] = []
            swap(&input, &job.input)
            freeBuffers.append(input)
        }
    }

    deinit {
        // Wait for workers so none outlives the pipeline's owner (e.g. after an error).
        for entry in inFlight[head...] { entry.job.done.wait() }
    }
}
