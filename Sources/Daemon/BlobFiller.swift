public import Blob
import Synchronization

/// Where verified chunk bytes go: the fanotify backend writes them into the blob's sparse cache
/// file, the fscache backend into the kernel's anonymous fd.
public protocol ChunkSink: Sendable {
    /// Writes the uncompressed bytes of chunk `index` at `info.uncompressedOffset` of the blob's
    /// address space. `bytes.count == info.uncompressedSize`.
    func write(chunk index: Int, info: ChunkInfo, bytes: [UInt8]) async throws
}

/// Limits shared by every filler of a daemon.
public struct FillLimits: Sendable {
    /// Adjacent missing chunks are fetched with one ranged request up to this many compressed bytes.
    public var batchBytes: UInt64 = 4 << 20
    public init(batchBytes: UInt64 = 4 << 20) { self.batchBytes = batchBytes }
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

    private struct State {
        var present: [Bool]
        var inFlight: [Int: Task<Void, any Error>] = [:]
    }
    private let state: Mutex<State>

    /// - Parameters:
    ///   - present: chunks already in the sink (e.g. found in the cache file after a restart).
    ///   - gate: bounds concurrent fetches across all blobs of the daemon.
    public init(blob: BlobInfo, store: ChunkStore?, sources: [any ChunkSource], sink: any ChunkSink,
                limits: FillLimits = FillLimits(), gate: FetchGate, stats: FillStatistics, present: [Bool]? = nil) {
        self.blob = blob
        name = "sha256:\(blob.hexDigest)"
        self.store = store
        self.sources = sources
        self.sink = sink
        self.limits = limits
        self.gate = gate
        self.stats = stats
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
        let claimed: [Int] = state.withLock { s in
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
            return mine
        }
        for run in runs(of: claimed) {
            let task = Task { try await self.fetch(run: run) }
            state.withLock { s in for i in run { s.inFlight[i] = task } }
            waits.append(task)
        }
        stats.cacheHits.add(alreadyPresent)
        var firstError: (any Error)?
        for task in waits {
            do { try await task.value } catch { if firstError == nil { firstError = error } }
        }
        if let firstError { throw firstError }
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
                try await deliver(i, bytes)
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
                var decoded: [(Int, [UInt8], ArraySlice<UInt8>)] = []
                for i in run {
                    let c = blob.chunks[i]
                    let start = Int(c.compressedOffset - range.lowerBound)
                    let stored = bytes[start ..< start + Int(c.compressedSize)]
                    decoded.append((i, try ChunkCodec.decode(stored, info: c, blob: name, index: i), stored))
                }
                stats.chunksVerified.add(decoded.count)
                for (i, data, stored) in decoded {
                    if let store, let error = store.save(blob.chunks[i], stored: stored) { stats.noteStoreError(error) }
                    try await deliver(i, data)
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

    private func deliver(_ index: Int, _ bytes: [UInt8]) async throws {
        do {
            try await sink.write(chunk: index, info: blob.chunks[index], bytes: bytes)
        } catch {
            throw FillError.sinkFailed(blob: name, chunk: index, reason: "\(error)")
        }
        state.withLock { $0.present[index] = true }
    }
}
