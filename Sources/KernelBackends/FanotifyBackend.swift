public import Daemon
import Blob
public import FerrySystem
import Foundation
public import Logging
import Synchronization

/// The `fanotify` backend (Linux ≥ 6.14): each blob's uncompressed address space is a sparse
/// cache file, marked with `FAN_PRE_ACCESS` in one pre-content fanotify group. The kernel's
/// file-backed EROFS reads the cache files; before each read reaches a file, the kernel asks
/// the group, ferryd fills the range (verified chunks, written in place) and answers
/// `FAN_ALLOW`, or denies with `EIO` when the data cannot be had: a reader never sees an
/// unfilled range.
public final class FanotifyBackend: KernelBackend {
    public let name = "fanotify"
    private let group: FanotifyGroup
    private let cacheDirectory: String
    private let store: ChunkStore?
    private let gate: FetchGate
    private let limits: FillLimits
    private let logger: Logger
    private let ownPID = ProcessInfoRaw.pid
    private let files = Mutex<[FileIdentity: CacheFile]>([:])
    private let blobs = Mutex<[String: CacheFile]>([:])
    private let stopping = Atomic<Bool>(false)
    /// Events for files not (yet) attached, held while a restarted ferryd re-attaches its images.
    private let parked = Mutex<[FanotifyEvent]?>(nil)

    /// A blob's cache file and the filler that writes it.
    final class CacheFile: Sendable {
        let path: String
        let descriptor: FileDescriptor
        let filler: BlobFiller
        /// Set once every chunk is present and the mark is removed: reads then raise no events.
        let complete = Atomic<Bool>(false)
        init(path: String, descriptor: FileDescriptor, filler: BlobFiller) {
            self.path = path
            self.descriptor = descriptor
            self.filler = filler
        }
    }

    /// - Parameter group: a pre-content group; pass one inherited from a previous ferryd to take
    ///   over its marks (pending events are then re-read and served).
    public init(group: FanotifyGroup, cacheDirectory: String, store: ChunkStore?, gate: FetchGate, limits: FillLimits = FillLimits(), logger: Logger) throws {
        self.group = group
        self.cacheDirectory = cacheDirectory
        self.store = store
        self.gate = gate
        self.limits = limits
        self.logger = logger
        do {
            try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        } catch {
            throw FillError.sinkFailed(blob: "-", chunk: -1, reason: "cannot create \(cacheDirectory): \(error.localizedDescription)")
        }
    }

    /// The group's descriptor (to hand to a successor or a holder process).
    public var groupDescriptor: FileDescriptor { group.descriptor }

    /// Blob cache files are shared by every mount (a domain changes nothing here).
    public func detach(_ image: RegisteredImage, mount: MountRequest) {}

    public func attach(_ image: RegisteredImage, mount: MountRequest) throws -> MountPlan {
        var devices: [String] = []
        for blob in image.metadata.blobs {
            devices.append(try cacheFile(for: blob, image: image).path)
        }
        return .fileBacked(bootstrap: image.bootstrapPath, devices: devices)
    }

    /// Bytes the cache files occupy on disk (what `du` reports).
    public func cacheBytes() -> UInt64 {
        blobs.withLock { $0.values.reduce(0) { $0 + ((try? $1.descriptor.allocatedBytes()) ?? 0) } }
    }

    /// The cache file of `blob`, created (sparse) and marked on first use, shared by every image.
    private func cacheFile(for blob: BlobInfo, image: RegisteredImage) throws -> CacheFile {
        if let existing = blobs.withLock({ $0[blob.hexDigest] }) { return existing }
        let path = "\(cacheDirectory)/\(blob.hexDigest).blob"
        let fd = try FileDescriptor.open(path, .createReadWrite)
        do {
            if try fd.size() != blob.uncompressedSize {
                try fd.truncate(to: 0)
                try fd.truncate(to: blob.uncompressedSize)
            }
            let present = try verifiedChunks(of: blob, in: fd)
            let sink = CacheFileSink(descriptor: fd)
            let filler = BlobFiller(blob: blob, store: store, sources: image.sources, sink: sink, limits: limits, gate: gate,
                                    stats: image.stats, present: present)
            // Warm start: chunks the store has go into the file before it is marked, so reads raise no events.
            if let store {
                for (i, chunk) in blob.chunks.enumerated() where !present[i] {
                    if let bytes = store.load(chunk) {
                        try fd.write(bytes, at: chunk.uncompressedOffset)
                        filler.markPresent([i])
                        image.stats.storeHits.add(1)
                    }
                }
            }
            let file = CacheFile(path: path, descriptor: fd, filler: filler)
            if filler.presentCount == blob.chunks.count {
                // Fully cached: no mark, reads go straight to the file.
                try? group.unmark(path)
                file.complete.store(true, ordering: .relaxed)
            } else {
                try group.mark(path)
            }
            let identity = try fd.identity()
            let winner: CacheFile = blobs.withLock { map in
                if let raced = map[blob.hexDigest] { return raced }
                map[blob.hexDigest] = file
                return file
            }
            if winner === file { files.withLock { $0[identity] = file } }
            logger.info("cache file ready", metadata: ["blob": "\(blob.hexDigest.prefix(12))", "present": "\(filler.presentCount)/\(blob.chunks.count)"])
            return winner
        } catch {
            try? fd.close()
            throw error
        }
    }

    /// Chunks whose bytes are already in the cache file (data, not holes) and match their digest.
    /// Damaged ones (a crash in the middle of a write) are punched out again.
    private func verifiedChunks(of blob: BlobInfo, in fd: FileDescriptor) throws -> [Bool] {
        var present = [Bool](repeating: false, count: blob.chunks.count)
        let data = try fd.dataRanges()
        guard !data.isEmpty else { return present }
        for (i, chunk) in blob.chunks.enumerated() {
            let range = chunk.uncompressedRange
            guard data.contains(where: { $0.lowerBound <= range.lowerBound && range.upperBound <= $0.upperBound }) else { continue }
            let bytes = try fd.read(at: range.lowerBound, count: Int(chunk.uncompressedSize))
            if SHA256.hash(bytes) == chunk.digest {
                present[i] = true
            } else {
                try? fd.punchHole(chunk.uncompressedOffset ..< chunk.uncompressedOffset + chunk.alignedSize)
            }
        }
        return present
    }

    /// Reads permission events through io_uring and answers each one.
    public func run() throws {
        let ring = try IORing(entries: 8)
        let buffer = try AlignedBuffer(count: 64 * 1024)
        while !stopping.load(ordering: .relaxed) {
            try ring.read(group.descriptor, into: buffer, at: 0, token: 1)
            _ = try ring.submit()
            guard let completion = try ring.completions(waitingFor: 1).first else { continue }
            if completion.result < 0 {
                if completion.result == -EINTR || completion.result == -EAGAIN { continue }
                if stopping.load(ordering: .relaxed) { break }
                throw SystemError.syscall("read fanotify group", errno: -completion.result)
            }
            let events = try FanotifyEvent.parse(buffer.bytes(0 ..< Int(completion.result))[...])
            for event in events { handle(event) }
        }
    }

    public func stop() {
        stopping.store(true, ordering: .relaxed)
    }

    public func beginRestore() {
        parked.withLock { $0 = [] }
    }

    public func endRestore() {
        let events = parked.withLock { list -> [FanotifyEvent] in
            defer { list = nil }
            return list ?? []
        }
        for event in events { handle(event) }
    }

    private func handle(_ event: FanotifyEvent) {
        guard event.isPermissionEvent, event.fd >= 0 else {
            if event.mask & FanotifyConstants.queueOverflow != 0 { logger.error("fanotify queue overflow") }
            if event.fd >= 0 { try? FileDescriptor(rawValue: event.fd, name: "event").close() }
            return
        }
        // Our own writes into cache files raise events too: they are the fill itself.
        if event.pid == ownPID {
            answer(event, .allow)
            return
        }
        let eventFile = FileDescriptor(rawValue: event.fd, name: "fanotify event fd")
        guard let identity = try? eventFile.identity(), let file = files.withLock({ $0[identity] }) else {
            // A file marked in this group that is not attached: a cache file of a previous ferryd whose
            // image is being re-attached. Never allow it unfilled: hold it until restoring ends, else EIO.
            let held = parked.withLock { list -> Bool in
                guard list != nil else { return false }
                list?.append(event)
                return true
            }
            if !held {
                logger.error("event for a cache file no image uses; answering EIO")
                answer(event, .denyWithErrno(EIO))
            }
            return
        }
        let blob = file.filler.blob
        let start = event.range?.offset ?? 0
        let count = event.range?.count ?? blob.uncompressedSize
        let end = min(blob.uncompressedSize, start &+ count)
        let logger = self.logger
        Task {
            do {
                if start < end {
                    file.filler.stats.bytesRequested.add(Int(end - start))
                    try await file.filler.fill(start ..< end)
                }
                self.answer(event, .allow)
                self.unmarkIfComplete(file)
            } catch {
                logger.error("read failed, answering EIO", metadata: ["error": "\(error)", "range": "\(start)..<\(end)"])
                self.answer(event, .denyWithErrno(EIO))
            }
        }
    }

    /// Once a cache file holds every chunk it needs no more events: removing its mark saves a
    /// round trip to ferryd on every later read (warm reads then cost what a local file costs).
    private func unmarkIfComplete(_ file: CacheFile) {
        guard !file.complete.load(ordering: .relaxed), file.filler.presentCount == file.filler.blob.chunks.count,
              file.complete.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        do {
            try group.unmark(file.path)
            logger.info("cache file complete, mark removed", metadata: ["blob": "\(file.filler.blob.hexDigest.prefix(12))"])
        } catch {
            logger.error("cannot remove the mark of a complete cache file", metadata: ["error": "\(error)"])
        }
    }

    private func answer(_ event: FanotifyEvent, _ response: FanotifyResponse) {
        do {
            try group.finish(event, response)
        } catch {
            logger.error("cannot answer fanotify event", metadata: ["error": "\(error)"])
        }
    }
}

/// Writes verified chunks into a blob's cache file.
struct CacheFileSink: ChunkSink {
    let descriptor: FileDescriptor
    func write(chunk index: Int, info: ChunkInfo, bytes: [UInt8]) async throws {
        try descriptor.write(bytes, at: info.uncompressedOffset)
    }
}
