import Foundation
import Synchronization

/// Which chunks of an image's blobs the kernel asked for first, in order, and when, counted from
/// the image's registration (its first mount). Fed by the kernel backends from the requests they
/// already handle; `GET /trace` and `ferry trace` show it, resolved to file paths.
///
/// Bounded: at most `limit` distinct chunks are kept (16 bytes each); chunks first read after
/// that are only counted (`overflow`). A chunk already seen costs one bit test under the lock and
/// no allocation, so repeated reads of cached data stay cheap.
public final class AccessTrace: Sendable {
    /// One chunk's first read: chunk `chunk` of the image's blob `blob` (indexes into
    /// `BootstrapMetadata.blobs` and its chunk table), `offsetNanoseconds` after the trace began.
    public struct Entry: Sendable, Equatable {
        public var blob: UInt32
        public var chunk: UInt32
        public var offsetNanoseconds: UInt64
        public init(blob: UInt32, chunk: UInt32, offsetNanoseconds: UInt64) {
            self.blob = blob
            self.chunk = chunk
            self.offsetNanoseconds = offsetNanoseconds
        }
    }

    /// What a trace holds at one moment.
    public struct Snapshot: Sendable {
        /// First reads, oldest first.
        public var entries: [Entry]
        /// Distinct chunks first read after `limit` entries were kept (not in `entries`).
        public var overflow: Int
    }

    /// Distinct chunks kept per image unless told otherwise: 1 MiB of entries.
    public static let defaultLimit = 65_536

    /// When the trace began (wall clock, for display).
    let started: Date
    /// Most entries kept.
    public let limit: Int
    private let startInstant: ContinuousClock.Instant
    /// Chunks per blob: what `record` accepts.
    private let chunkCounts: [Int]

    private struct State {
        /// Per blob, one bit per chunk: set once the chunk was recorded (or counted as overflow).
        var seen: [[UInt64]]
        var entries: [Entry] = []
        var overflow = 0
    }
    private let state: Mutex<State>

    /// - Parameter chunkCounts: the number of chunks of each of the image's blobs, in order.
    public init(chunkCounts: [Int], limit: Int = AccessTrace.defaultLimit) {
        started = Date()
        startInstant = ContinuousClock.now
        self.limit = max(0, limit)
        self.chunkCounts = chunkCounts.map { max(0, $0) }
        state = Mutex(State(seen: self.chunkCounts.map { [UInt64](repeating: 0, count: ($0 + 63) / 64) }))
    }

    /// Records each chunk of `chunks` of blob `blob` that was not recorded before, in index order.
    /// Indexes outside the blob are ignored.
    public func record(blob: Int, chunks: Range<Int>) {
        guard blob >= 0, blob < chunkCounts.count else { return }
        let upper = min(chunks.upperBound, chunkCounts[blob])
        guard chunks.lowerBound >= 0, chunks.lowerBound < upper else { return }
        state.withLock { s in
            var now: UInt64?
            for chunk in chunks.lowerBound..<upper {
                let word = chunk >> 6, bit = UInt64(1) << UInt64(chunk & 63)
                if s.seen[blob][word] & bit != 0 { continue }
                s.seen[blob][word] |= bit
                guard s.entries.count < limit else {
                    s.overflow += 1
                    continue
                }
                let offset = now ?? elapsedNanoseconds()
                now = offset
                s.entries.append(Entry(blob: UInt32(blob), chunk: UInt32(chunk), offsetNanoseconds: offset))
            }
        }
    }

    /// The entries and overflow count as they are now.
    public func snapshot() -> Snapshot {
        state.withLock { Snapshot(entries: $0.entries, overflow: $0.overflow) }
    }

    /// A handle that records into this trace for blob `index` (what a backend's filler keeps).
    public func blob(_ index: Int) -> BlobAccessTrace { BlobAccessTrace(trace: self, blob: index) }

    private func elapsedNanoseconds() -> UInt64 {
        let (seconds, attoseconds) = (ContinuousClock.now - startInstant).components
        return UInt64(max(0, seconds)) &* 1_000_000_000 &+ UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}

/// One blob of an image's access trace: what a backend records a kernel request's chunks into.
public struct BlobAccessTrace: Sendable {
    public let trace: AccessTrace
    /// The blob's index in the image's `BootstrapMetadata.blobs`.
    public let blob: Int

    /// Records the chunks of `chunks` not recorded before.
    public func record(chunks: Range<Int>) { trace.record(blob: blob, chunks: chunks) }
}
