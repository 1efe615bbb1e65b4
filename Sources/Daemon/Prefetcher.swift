public import Blob
import EROFS
import FerrySystem
public import Logging

/// Background prefetch after a mount: the chunks of the image's recorded prefetch list (from
/// `ferry convert --prefetch`), of paths given at mount time, or of every blob, fetched at low
/// priority into the chunk store. Kernel requests then find them there, whichever backend
/// serves the mount. On-demand fetches keep their own gate, so a prefetch never holds up a reader
/// for more than the connections it was given.
public final class Prefetcher: Sendable {
    private let store: ChunkStore
    private let gate: FetchGate
    private let logger: Logger

    /// - Parameter connections: fetches a prefetch may have in flight (on top of the on-demand gate).
    public init(store: ChunkStore, connections: Int = 2, logger: Logger) {
        self.store = store
        self.gate = FetchGate(limit: connections)
        self.logger = logger
    }

    /// Chunk indexes per blob index that `paths` need (a directory stands for every file below it).
    /// Paths are raw bytes relative to the root; a path that does not exist is skipped with a log line.
    public static func plan(paths: [[UInt8]], bootstrap: String, metadata: BootstrapMetadata, logger: Logger) throws -> [Int: [Int]] {
        let reader = try ImageReader(path: bootstrap)
        var wanted: [Int: Set<Int>] = [:]
        func add(_ inode: Inode) throws {
            for chunk in try FileChunks.of(inode, in: reader, metadata: metadata) {
                wanted[chunk.blob, default: []].insert(chunk.chunk)
            }
        }
        for path in paths {
            let start: Inode
            do {
                start = try reader.lookup(path: path)
            } catch {
                logger.warning("prefetch path not in the image", metadata: ["path": "\(String(decoding: path, as: UTF8.self))"])
                continue
            }
            if start.type == .directory {
                try reader.walk(from: start, path: path) { _, inode in try add(inode) }
            } else {
                try add(start)
            }
        }
        return wanted.mapValues { $0.sorted() }
    }

    /// Starts prefetching `paths` (or every chunk of every blob when `everything`) of `image` in the
    /// background. Returns the task, which ends when all are in the store (or failed: logged).
    @discardableResult
    public func start(_ image: RegisteredImage, paths: [[UInt8]], everything: Bool = false) -> Task<Void, Never> {
        let store = self.store, gate = self.gate, logger = self.logger
        return Task(priority: .background) {
            let plan: [Int: [Int]]
            do {
                if everything {
                    plan = Dictionary(uniqueKeysWithValues: image.metadata.blobs.enumerated().map { ($0.offset, Array($0.element.chunks.indices)) })
                } else {
                    // Walking the bootstrap reads files: on the blocking pool, not a cooperative thread.
                    plan = try await DedicatedThread.run {
                        try Self.plan(paths: paths, bootstrap: image.bootstrapPath, metadata: image.metadata, logger: logger)
                    }
                }
            } catch {
                logger.error("cannot plan prefetch", metadata: ["image": "\(image.id.prefix(12))", "error": "\(error)"])
                return
            }
            var chunks = 0, failed = 0
            for (blobIndex, indexes) in plan.sorted(by: { $0.key < $1.key }) {
                let blob = image.metadata.blobs[blobIndex]
                let missing = indexes.filter { !store.contains(blob.chunks[$0].digest) }
                guard !missing.isEmpty else { continue }
                // A filler whose sink discards: verified chunks land in the store on the way.
                let filler = BlobFiller(blob: blob, store: store, sources: image.sources, sink: DiscardingSink(),
                                        limits: FillLimits(readaheadBytes: 0), gate: gate, stats: image.stats)
                // Adjacent chunks go in one fill, which batches them into ranged requests.
                for run in Self.adjacentRuns(missing) {
                    guard let first = run.first, let last = run.last else { continue }
                    do {
                        try await filler.fill(blob.chunks[first].uncompressedOffset ..< blob.chunks[last].uncompressedRange.upperBound)
                        chunks += run.count
                    } catch {
                        failed += run.count
                        logger.warning("prefetch failed", metadata: ["blob": "\(blob.hexDigest.prefix(12))", "error": "\(error)"])
                    }
                }
            }
            image.stats.prefetchedChunks.add(chunks)
            logger.info("prefetch done", metadata: ["image": "\(image.id.prefix(12))", "chunks": "\(chunks)", "failed": "\(failed)"])
        }
    }
}

extension Prefetcher {
    /// Sorted indexes split where they stop being consecutive.
    static func adjacentRuns(_ indexes: [Int]) -> [[Int]] {
        var runs: [[Int]] = []
        for i in indexes {
            if let last = runs.last?.last, last + 1 == i { runs[runs.count - 1].append(i) } else { runs.append([i]) }
        }
        return runs
    }
}

/// A sink that keeps nothing (prefetch only wants the chunks in the store).
struct DiscardingSink: ChunkSink {
    func write(chunk index: Int, info: ChunkInfo, bytes: ArraySlice<UInt8>) async throws {}
}
