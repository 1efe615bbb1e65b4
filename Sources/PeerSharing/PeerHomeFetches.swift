import Daemon
import Blob
import Synchronization

/// Chunks this node fetches from its own sources (its registry, with its own credentials):
/// those it is home of, for its own reads and for peers that ask, and those the peers failed
/// to give. Each chunk is fetched once however many local reads and peers want it at the same
/// time; it is verified and saved in the chunk store before anyone gets it, so a peer arriving
/// just after finds it there.
final class PeerHomeFetches: Sendable {
    private let store: ChunkStore
    private let metrics: PeerMetrics
    private let inFlight = Mutex<[[UInt8]: Task<[UInt8], any Error>]>([:])

    init(store: ChunkStore, metrics: PeerMetrics) {
        self.store = store
        self.metrics = metrics
    }

    /// The stored bytes of chunks `indexes` (ascending) of `blob`, read from `source` in runs of
    /// adjacent chunks (joining fetches already under way for any of them).
    func fetch(blob: BlobInfo, indexes: [Int], from source: any ChunkSource) async throws -> [[UInt8]] {
        var perChunk: [Task<[UInt8], any Error>] = []
        inFlight.withLock { table in
            var fresh: [Int] = []
            var joined: [Int: Task<[UInt8], any Error>] = [:]
            for i in indexes {
                if let task = table[blob.chunks[i].digest] { joined[i] = task } else { fresh.append(i) }
            }
            var mine: [Int: Task<[UInt8], any Error>] = [:]
            for run in Self.adjacentRuns(fresh) {
                let digests = run.map { blob.chunks[$0].digest }
                let runTask = Task<[[UInt8]], any Error> {
                    defer { self.inFlight.withLock { t in for d in digests { t[d] = nil } } }
                    return try await self.fetchRun(blob: blob, run: run, source: source)
                }
                for (k, i) in run.enumerated() {
                    let task = Task<[UInt8], any Error> { try await runTask.value[k] }
                    table[blob.chunks[i].digest] = task
                    mine[i] = task
                }
            }
            perChunk = indexes.compactMap { mine[$0] ?? joined[$0] }
        }
        var out: [[UInt8]] = []
        out.reserveCapacity(perChunk.count)
        for task in perChunk { out.append(try await task.value) }
        return out
    }

    private func fetchRun(blob: BlobInfo, run: [Int], source: any ChunkSource) async throws -> [[UInt8]] {
        guard let first = run.first, let last = run.last else { return [] }
        let range = blob.chunks[first].compressedOffset ..< blob.chunks[last].compressedRange.upperBound
        let bytes = try await source.read(blob: blob, range: range)
        guard bytes.count == Int(range.upperBound - range.lowerBound) else {
            throw FillError.shortRead(source: source.name, blob: blob.hexDigest, expected: Int(range.upperBound - range.lowerBound), got: bytes.count)
        }
        var out: [[UInt8]] = []
        for i in run {
            let c = blob.chunks[i]
            let start = Int(c.compressedOffset - range.lowerBound)
            let stored = bytes[start ..< start + Int(c.compressedSize)]
            _ = try ChunkCodec.decode(stored, info: c, blob: "sha256:\(blob.hexDigest)", index: i)
            store.save(c, stored: stored)
            out.append(Array(stored))
        }
        metrics.homeFetches.add(run.count)
        return out
    }

    /// Splits ascending indexes into runs of consecutive ones.
    static func adjacentRuns(_ indexes: [Int]) -> [[Int]] {
        var runs: [[Int]] = []
        for i in indexes {
            if let last = runs.last?.last, last + 1 == i { runs[runs.count - 1].append(i) } else { runs.append([i]) }
        }
        return runs
    }
}
