import Blob
import Dispatch

/// Hashes and compresses chunks on all cores while the caller keeps reading input, and hands
/// results back **in submission order** on the caller's thread.
///
/// The caller submits chunks with a tag. Small chunks (the many small files of an image) are
/// gathered into batches of about `batchBytes`, so each hand-off to a worker carries enough work
/// to outweigh its cost (a queue hand-off, a wake-up, a semaphore): 50,000 small files would
/// otherwise mean 50,000 hand-offs. When more than `window` batches are in flight, `submit`
/// first completes the oldest one and passes its chunks to `commit`. So all state that `commit`
/// touches stays on one thread, the output order (and thus the blob layout) is deterministic,
/// and memory is bounded by `window` batches.
final class ChunkPipeline<Tag> {
    /// One batch of chunks being encoded on a worker.
    private final class Job: @unchecked Sendable {
        // `results` is written once by the worker before `done.signal()`; the owner reads it, and
        // takes `inputs` back, only after `done.wait()`: the semaphore orders the accesses.
        var results: [Result<EncodedChunk, any Error>] = []
        /// The chunks' bytes; large buffers go back to the pipeline's free list once committed.
        var inputs: [[UInt8]]
        let done = DispatchSemaphore(value: 0)
        init(inputs: [[UInt8]]) { self.inputs = inputs }
    }

    /// A batch goes to a worker once its chunks hold this many bytes, or `batchCount` chunks.
    static var batchBytes: Int { 1 << 20 }
    static var batchCount: Int { 64 }
    /// Buffers at least this large are recycled; smaller ones are plain allocations, which the
    /// heap serves well from the holes that freed small buffers leave.
    static var recycledCapacity: Int { 256 << 10 }

    private let compression: ChunkCompression
    private let window: Int
    private let queue = DispatchQueue(label: "ferry.chunk-encoder", attributes: .concurrent)
    private var inFlight: [(job: Job, tags: [Tag])] = []
    private var head = 0
    private var gathered: [[UInt8]] = []
    private var gatheredTags: [Tag] = []
    private var gatheredBytes = 0
    /// Large chunk buffers whose chunks are committed, for `takeBuffer` to hand out again: reusing
    /// them keeps megabyte allocations from fragmenting the heap between small long-lived ones.
    private var freeBuffers: [[UInt8]] = []
    private let commit: (EncodedChunk, Tag) throws -> Void

    /// Bytes in flight the window is cut down to when chunks are large (then a batch is one chunk).
    static var bytesInFlight: Int { 32 << 20 }

    /// - Parameters:
    ///   - window: how many batches may be in flight; with chunks larger than a batch it shrinks
    ///     to about `bytesInFlight` worth (at least 3 batches), so memory stays bounded whatever
    ///     the chunk size (16 batches of 1 MiB chunks; 3 of 16 MiB ones).
    ///   - largestChunk: the largest chunk that will be submitted (the image's chunk size).
    ///   - commit: receives each encoded chunk, in submission order, on the submitting thread.
    init(compression: ChunkCompression, window: Int, largestChunk: Int, commit: @escaping (EncodedChunk, Tag) throws -> Void) {
        self.compression = compression
        self.window = max(1, min(window, max(3, Self.bytesInFlight / max(largestChunk, Self.batchBytes))))
        self.commit = commit
    }

    /// An empty buffer with at least `capacity` bytes reserved, recycled when it is large.
    func takeBuffer(capacity: Int) -> [UInt8] {
        var buffer: [UInt8] = []
        if capacity >= Self.recycledCapacity, let recycled = freeBuffers.popLast() {
            buffer = recycled
            buffer.removeAll(keepingCapacity: true)
        }
        buffer.reserveCapacity(capacity)
        return buffer
    }

    /// Queues `bytes` for hashing and compression.
    func submit(_ bytes: [UInt8], tag: Tag) throws {
        gatheredBytes += bytes.count
        gathered.append(bytes)
        gatheredTags.append(tag)
        if gatheredBytes >= Self.batchBytes || gathered.count >= Self.batchCount { try dispatchGathered() }
    }

    /// Completes every chunk submitted so far.
    func drain() throws {
        try dispatchGathered()
        while head < inFlight.count { try completeOldest() }
        inFlight.removeAll(keepingCapacity: true)
        head = 0
    }

    private func dispatchGathered() throws {
        guard !gathered.isEmpty else { return }
        let job = Job(inputs: gathered)
        let tags = gatheredTags
        gathered = []
        gatheredTags = []
        gatheredBytes = 0
        let compression = self.compression
        queue.async {
            job.results = job.inputs.map { input in Result { try ChunkCodec.encode(input, compression: compression) } }
            job.done.signal()
        }
        inFlight.append((job, tags))
        while inFlight.count - head > window { try completeOldest() }
    }

    private func completeOldest() throws {
        let (job, tags) = inFlight[head]
        job.done.wait()
        head += 1
        if head > 1024 {
            inFlight.removeFirst(head)
            head = 0
        }
        let results = job.results
        job.results = []
        var inputs: [[UInt8]] = []
        swap(&inputs, &job.inputs)
        for (result, tag) in zip(results, tags) { try commit(try result.get(), tag) }
        for input in inputs where input.capacity >= Self.recycledCapacity && freeBuffers.count <= window {
            freeBuffers.append(input)
        }
    }

    deinit {
        // Wait for workers so none outlives the pipeline's owner (e.g. after an error).
        for entry in inFlight[head...] { entry.job.done.wait() }
    }
}
