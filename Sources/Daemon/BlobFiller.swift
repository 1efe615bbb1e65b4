public import Blob
import Synchronization

/// Where verified chunk bytes go: the fanotify backend writes them into the blob's sparse cache
/// file, the fscache backend into the kernel's anonymous fd.
public protocol ChunkSink: Sendable {
    /// Writes the uncompressed bytes of chunk `index` at `info.uncompressedOffset` of the blob's
    /// address space. `bytes.count == info.uncompressedSize`.
    func write(chunk index: Int, info: ChunkInfo, bytes: ArraySlice<UInt8>) async throws
}

/// Limits shared by every filler of a daemon.
public struct FillLimits: Sendable {
    /// Adjacent missing chunks are fetched with one ranged request up to this many compressed bytes.
    /// 8 MiB by default: a registry spends milliseconds of CPU on every request besides the bytes
    /// (docker-registry ~4 ms here), so a cold sequential read made of 4 MiB requests cost it a
    /// third more CPU.
    public var batchBytes: UInt64
    /// Sequential readahead: once a reader has read `readaheadTrigger` bytes of a blob in order,
    /// the chunks after each request are fetched in the background, in a window that grows with
    /// the run up to `readaheadBytes` (0 turns readahead off). Short reads (one small file)
    /// never trigger it, so they fetch only their own chunks.
    public var readaheadBytes: UInt64
    public var readaheadTrigger: UInt64
    /// The defaults here are the daemon's (`DaemonConfiguration` starts from them).
    public init(batchBytes: UInt64 = 8 << 20, readaheadBytes: UInt64 = 32 << 20, readaheadTrigger: UInt64 = 4 << 20) {
        self.batchBytes = batchBytes
        self.readaheadBytes = readaheadBytes
        self.readaheadTrigger = readaheadTrigger
    }
}

/// Makes ranges of one blob's uncompressed address space present in its sink, fetching only
/// missing chunks, each exactly once even under concurrent requests, verified before use.
public final class BlobFiller: Sendable {
    public let blob: BlobInfo
    /// The blob's id in logs: "sha256:<hex>".
    public let name: String
    private let store: ChunkStore?
    private let sources: [any ChunkSource]
    private let sink: any ChunkSink
    private let limits: FillLimits
    private let gate: FetchGate
    public let stats: FillStatistics
    /// Where the kernel's requests for this blob are traced (nil: not traced, e.g. prefetch).
    public let trace: BlobAccessTrace?

    private struct State {
        var present: [Bool]
        var inFlight: [Int: Task<Void, any Error>] = [:]
        /// The reader's sequential run: where the last request ended and how long the run is.
        var streamEnd: UInt64 = 0
        var streamLength: UInt64 = 0
    }
    private let state: Mutex<State>

    /// - Parameters:
    ///   - present: chunks already in the sink (e.g. found in the cache file after a restart).
    ///   - gate: bounds concurrent fetches across all blobs of the daemon.
    ///   - trace: where `recordAccess` notes the chunks the kernel asks for.
    public init(blob: BlobInfo, store: ChunkStore?, sources: [any ChunkSource], sink: any ChunkSink,
                limits: FillLimits = FillLimits(), gate: FetchGate, stats: FillStatistics, present: [Bool]? = nil,
                trace: BlobAccessTrace? = nil) {
        self.blob = blob
        name = "sha256:\(blob.hexDigest)"
        self.store = store
        self.sources = sources
        self.sink = sink
        self.limits = limits
        self.gate = gate
        self.stats = stats
        self.trace = trace
        let initial = present.flatMap { $0.count == blob.chunks.count ? $0 : nil } ?? [Bool](repeating: false, count: blob.chunks.count)
        state = Mutex(State(present: initial))
    }

    /// Whether chunk `index` is already in the sink.
    public func isPresent(_ index: Int) -> Bool { state.withLock { $0.present[index] } }

    /// Number of chunks present in the sink.
    public var presentCount: Int { state.withLock { $0.present.lazy.filter { $0 }.count } }

    /// Marks chunks as present without fetching (the backend found them in its cache).
    public func markPresent(_ indexes: some Sequence<Int>) {
        state.withLock { s in for i in indexes where i < s.present.count { s.present[i] = true } }
    }

    /// A kernel request asked for `range`: counts its bytes and traces the chunks it covers
    /// (before the fill, so the trace keeps the order of requests, not of completions).
    public func recordAccess(_ range: Range<UInt64>) {
        stats.bytesRequested.add(Int(range.upperBound - range.lowerBound))
        trace?.record(chunks: blob.chunkIndexes(overlapping: range))
    }

    /// Makes every chunk overlapping `range` present in the sink. Throws (naming blob and chunk)
    /// when a chunk cannot be fetched and verified from any source.
    public func fill(_ range: Range<UInt64>) async throws {
        guard range.upperBound <= blob.uncompressedSize else {
            throw FillError.rangeOutOfBounds(blob: name, range: range, size: blob.uncompressedSize)
        }
        let indexes = blob.chunkIndexes(overlapping: range)
        guard !indexes.isEmpty else { return }
        // Claim what nobody is fetching; remember what others are fetching.
        var waits: [Task<Void, any Error>] = []
        var alreadyPresent = 0
        var readahead: Range<UInt64>?
        state.withLock { s in
            readahead = nextReadahead(after: range, &s)
            var mine: [Int] = []
            for i in indexes {
                if s.present[i] {
                    alreadyPresent += 1
                } else if let task = s.inFlight[i] {
                    waits.append(task)
                } else {
                    mine.append(i)
                }
            }
            waits += startFetches(of: mine, &s)
        }
        stats.cacheHits.add(alreadyPresent)
        if let readahead { startReadahead(readahead) }
        var firstError: (any Error)?
        for task in waits {
            do { try await task.value } catch { if firstError == nil { firstError = error } }
        }
        if let firstError { throw firstError }
    }

    /// Tracks the reader's sequential run; returns the range to read ahead, if any.
    private func nextReadahead(after range: Range<UInt64>, _ s: inout State) -> Range<UInt64>? {
        guard limits.readaheadBytes > 0 else { return nil }
        let slack = UInt64(blob.chunks.first?.alignedSize ?? 0)
        let sequential = range.lowerBound + slack >= s.streamEnd && range.lowerBound <= s.streamEnd + slack
        s.streamLength = sequential ? s.streamLength + UInt64(range.count) : UInt64(range.count)
        s.streamEnd = max(range.upperBound, sequential ? s.streamEnd : 0)
        guard s.streamLength >= limits.readaheadTrigger, range.upperBound < blob.uncompressedSize else { return nil }
        let window = min(limits.readaheadBytes, s.streamLength)
        return range.upperBound ..< min(blob.uncompressedSize, range.upperBound + window)
    }

    /// Fetches the chunks of `range` nobody has or is fetching, in the background; failures are
    /// left for a real request to meet (and report).
    ///
    /// The window slides forward with every request (the kernel asks 64–128 KiB at a time), so
    /// each request would leave one new chunk uncovered at its end: fetched at once, that is one
    /// registry request per chunk. The window's missing part is fetched only once it is worth a
    /// full batch (or a quarter of the window, or the blob's end is in it), then in `batchBytes` runs.
    private func startReadahead(_ range: Range<UInt64>) {
        let indexes = blob.chunkIndexes(overlapping: range)
        let started = state.withLock { s in
            let claimed = indexes.filter { !s.present[$0] && s.inFlight[$0] == nil }
            guard !claimed.isEmpty else { return 0 }
            let missingBytes = claimed.reduce(UInt64(0)) { $0 + UInt64(blob.chunks[$1].compressedSize) }
            let windowBytes = indexes.reduce(UInt64(0)) { $0 + UInt64(blob.chunks[$1].compressedSize) }
            let reachesEnd = range.upperBound >= blob.uncompressedSize
            guard reachesEnd || missingBytes >= min(limits.batchBytes, windowBytes / 4) else { return 0 }
            _ = startFetches(of: claimed, &s)
            return claimed.count
        }
        stats.readaheadChunks.add(started)
    }

    /// Starts one fetch task per run of `claimed` and records it as in flight. Called with the
    /// state locked, so a task cannot clear its entries before they are set.
    private func startFetches(of claimed: [Int], _ s: inout State) -> [Task<Void, any Error>] {
        runs(of: claimed).map { run in
            let task = Task { try await self.fetch(run: run) }
            for i in run { s.inFlight[i] = task }
            return task
        }
    }

    /// Splits sorted chunk indexes into runs of adjacent chunks of at most `batchBytes`.
    private func runs(of indexes: [Int]) -> [[Int]] {
        var result: [[Int]] = []
        var current: [Int] = []
        var bytes: UInt64 = 0
        for i in indexes {
            let size = UInt64(blob.chunks[i].compressedSize)
            if let last = current.last, last + 1 == i, bytes + size <= limits.batchBytes {
                current.append(i)
                bytes += size
            } else {
                if !current.isEmpty { result.append(current) }
                current = [i]
                bytes = size
            }
        }
        if !current.isEmpty { result.append(current) }
        return result
    }

    /// Fetches one run (store first, then sources in order), verifies and writes every chunk.
    private func fetch(run: [Int]) async throws {
        defer { state.withLock { s in for i in run { s.inFlight[i] = nil } } }
        var missing: [Int] = []
        for i in run {
            if let store, let bytes = store.load(blob.chunks[i]) {
                stats.storeHits.add(1)
                try await deliver(i, bytes[...])
            } else {
                missing.append(i)
            }
        }
        for sub in runs(of: missing) {
            try await fetchFromSources(sub)
        }
    }

    private func fetchFromSources(_ run: [Int]) async throws {
        guard let first = run.first, let last = run.last else { return }
        let range = blob.chunks[first].compressedOffset ..< blob.chunks[last].compressedRange.upperBound
        var reasons: [String] = []
        for source in sources {
            do {
                let bytes = try await gate.withPermit { try await source.read(blob: self.blob, range: range) }
                stats.fetched(from: source.name, bytes: UInt64(bytes.count))
                guard bytes.count == Int(range.upperBound - range.lowerBound) else {
                    throw FillError.shortRead(source: source.name, blob: name, expected: Int(range.upperBound - range.lowerBound), got: bytes.count)
                }
                // Decode and verify every chunk before any of them reaches the sink.
                var decoded: [(Int, ArraySlice<UInt8>, ArraySlice<UInt8>)] = []
                for i in run {
                    let c = blob.chunks[i]
                    let start = Int(c.compressedOffset - range.lowerBound)
                    let stored = bytes[start ..< start + Int(c.compressedSize)]
                    decoded.append((i, try ChunkCodec.decodeSharing(stored, info: c, blob: name, index: i), stored))
                }
                stats.chunksVerified.add(decoded.count)
                stats.uncompressedBytesFetched.add(decoded.reduce(0) { $0 + $1.1.count })
                // The reader waits for the sink, not for the store: deliver everything first.
                for (i, data, _) in decoded { try await deliver(i, data) }
                if let store {
                    for (i, _, stored) in decoded {
                        if let error = store.save(blob.chunks[i], stored: stored) { stats.noteStoreError(error) }
                    }
                }
                return
            } catch let error as FillError {
                if case .sinkFailed = error { throw error }
                reasons.append("\(source.name): \(error)")
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                if error is BlobError { stats.chunksFailed.add(1); stats.badSource(source.name) }
                reasons.append("\(source.name): \(error)")
            }
        }
        throw FillError.allSourcesFailed(blob: name, chunk: first, reasons: reasons.isEmpty ? ["no sources configured"] : reasons)
    }

    private func deliver(_ index: Int, _ bytes: ArraySlice<UInt8>) async throws {
        do {
            try await sink.write(chunk: index, info: blob.chunks[index], bytes: bytes)
        } catch {
            throw FillError.sinkFailed(blob: name, chunk: index, reason: "\(error)")
        }
        state.withLock { $0.present[index] = true }
    }
}
