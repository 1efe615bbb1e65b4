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
public final class FanotifyBackend: KernelBackend, HandsOverDescriptors, ReportsHealth, EvictsCachedBlobs, DetectsLostKernelState {
    public let name = "fanotify"
    public var lostKernelState: LostKernelState { .readsWereUnguarded }
    public let startedAfresh: Bool
    private let group: FanotifyGroup
    private let cacheDirectory: String
    private let store: ChunkStore?
    private let gate: FetchGate
    private let limits: FillLimits
    private let logger: Logger
    private let metrics: DaemonMetrics
    private let ownPID = ProcessInfoRaw.pid
    private let files = Mutex<[FileIdentity: CacheFile]>([:])
    /// Cache files by `BlobInfo.cacheKey` (`RegisteredImage.blobCacheKeys`).
    private let blobs = Mutex<[String: CacheFile]>([:])
    /// Events for files not (yet) attached, held while a restarted ferryd re-attaches its images.
    private let parked = Mutex<[FanotifyEvent]?>(nil)
    /// Set under this lock once `stop()` began: no event is read from the group after it, so
    /// every event still queued in the kernel is left to the successor.
    private let readingClosed = Mutex<Bool>(false)
    /// Permission events read and not answered yet.
    private let unanswered = Atomic<Int>(0)
    /// Bumped on every turn of the event loop (at least every `loopTickMilliseconds`).
    private let loopTurns = Atomic<UInt64>(0)
    private let loopEnded = Atomic<Bool>(false)
    private let lastHealthCheck = Mutex<(turns: UInt64, at: UInt64)>((0, 0))
    private let journal: InflightJournal?
    private let recovered: Mutex<[(InflightJournal.Entry, FileDescriptor)]>
    /// How long the loop waits for events before turning anyway (its heartbeat).
    public static let loopTickMilliseconds: Int32 = 250

    /// A blob's cache file and the filler that writes it.
    final class CacheFile: Sendable {
        let path: String
        /// Closed after eviction and the last fill in progress.
        let handle: SharedDescriptor
        var descriptor: FileDescriptor { handle.descriptor }
        let filler: BlobFiller
        /// Set once every chunk is present and the mark is removed: reads then raise no events.
        let complete = Atomic<Bool>(false)
        /// Milliseconds since 1970 of the last kernel request for this file (LRU eviction).
        let lastUse = Atomic<UInt64>(UInt64(Date().timeIntervalSince1970 * 1000))
        init(path: String, descriptor: FileDescriptor, filler: BlobFiller) {
            self.path = path
            self.handle = SharedDescriptor(descriptor)
            self.filler = filler
        }
    }

    /// - Parameter group: a pre-content group; pass one inherited from a previous ferryd to take
    ///   over its marks (pending events are then re-read and served).
    ///   - startedAfresh: the group is new although a previous ferryd may have left mounts
    ///     (`DetectsLostKernelState`).
    ///   - journal: where events in flight are recorded for a successor (nil: not recorded).
    ///   - recovered: the events a killed predecessor had read and not answered (from its
    ///     journal): filled and answered once re-attaching ends.
    public init(group: FanotifyGroup, cacheDirectory: String, store: ChunkStore?, gate: FetchGate, limits: FillLimits = FillLimits(),
                metrics: DaemonMetrics = DaemonMetrics(backend: "fanotify"), startedAfresh: Bool = false, journal: InflightJournal? = nil,
                recovered: [InflightJournal.Entry] = [], logger: Logger) throws {
        self.metrics = metrics
        self.journal = journal
        // The kernel matches an answer by fd number alone: until a recovered event is answered,
        // its number is held here by a placeholder, so no event this ferryd reads can get it.
        // A number already in use here cannot be held: that event is failed now, before any read.
        var placeholders = FileDescriptor.occupy(numbers: recovered.map(\.fd))
        var held: [(InflightJournal.Entry, FileDescriptor)] = []
        for entry in recovered {
            if let placeholder = placeholders.removeValue(forKey: entry.fd) {
                held.append((entry, placeholder))
            } else {
                try? group.respond(to: entry.fd, .denyWithErrno(EIO))
            }
        }
        self.recovered = Mutex(held)
        self.startedAfresh = startedAfresh
        self.group = group
        self.cacheDirectory = cacheDirectory
        self.store = store
        self.gate = gate
        self.limits = limits
        self.logger = logger
        do {
            try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw FillError.sinkFailed(blob: "-", chunk: -1, reason: "cannot create \(cacheDirectory): \(error.localizedDescription)")
        }
    }

    /// The group's descriptor (to hand to a successor or a holder process).
    public var groupDescriptor: FileDescriptor { group.descriptor }

    /// The group fd, stored as `fanotify-group`: the kernel keeps the marks and queues events
    /// while any process (the service manager's store, the holder) holds it.
    public var descriptorsToKeep: [(name: String, fd: FileDescriptor)] { [(HandedOverDescriptor.fanotifyGroup, group.descriptor)] }

    /// Permission events read and not yet answered.
    public var unansweredEvents: Int { unanswered.load(ordering: .relaxed) }

    /// Unhealthy when the loop has ended, or has not turned for 4 ticks although it wakes every tick.
    public func healthProblem() -> String? {
        if loopEnded.load(ordering: .relaxed) { return "fanotify event loop ended" }
        // Read under the lock: concurrent health checks once took `now` before another check
        // stored a later one, and `now - last.at` trapped (an unsigned overflow killed ferryd
        // under the hostile-client test).
        return lastHealthCheck.withLock { last -> String? in
            let now = Self.monotonicMilliseconds()
            let turns = loopTurns.load(ordering: .relaxed)
            if turns != last.turns || last.at == 0 {
                last = (turns, now)
                return nil
            }
            let stalled = now >= last.at ? now - last.at : 0
            return stalled > UInt64(4 * Self.loopTickMilliseconds) ? "fanotify event loop stuck for \(stalled) ms" : nil
        }
    }

    static func monotonicMilliseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds / 1_000_000 }

    /// Blob cache files are shared by every mount (a domain changes nothing here).
    public func detach(_ image: RegisteredImage, mount: MountRequest) {}

    public func attach(_ image: RegisteredImage, mount: MountRequest) throws -> MountPlan {
        var devices: [String] = []
        for (blob, key) in zip(image.metadata.blobs, image.blobCacheKeys) {
            devices.append(try cacheFile(for: blob, key: key, image: image).path)
        }
        return .fileBacked(bootstrap: image.bootstrapPath, devices: devices)
    }

    /// Bytes the cache files occupy on disk (what `du` reports).
    public func cacheBytes() -> UInt64 {
        blobs.withLock { $0.values.reduce(0) { $0 + ((try? $1.descriptor.allocatedBytes()) ?? 0) } }
    }

    /// The cache file of `blob`, created (sparse) and marked on first use, shared by the images
    /// whose chunk tables for it are the same (`BlobInfo.cacheKey`: blob digest and chunk-table
    /// digest). An image that names a known blob digest with another chunk table gets a cache file
    /// of its own, so it can neither read nor write another image's bytes.
    private func cacheFile(for blob: BlobInfo, key: String, image: RegisteredImage) throws -> CacheFile {
        if let existing = blobs.withLock({ $0[key] }) { return existing }
        let path = "\(cacheDirectory)/\(key).blob"
        let fd = try FileDescriptor.open(path, .createReadWrite, permissions: 0o600)
        do {
            if try fd.size() != blob.uncompressedSize {
                try fd.truncate(to: 0)
                try fd.truncate(to: blob.uncompressedSize)
            }
            let present = try verifiedChunks(of: blob, in: fd)
            let sink = CacheFileSink(descriptor: fd)
            let filler = BlobFiller(blob: blob, store: store, sources: image.sources, sink: sink, limits: limits, gate: gate,
                                    stats: image.stats, present: present, trace: image.accessTrace(of: blob))
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
                if let raced = map[key] { return raced }
                map[key] = file
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

    /// Reads permission events and answers each one. The group is non-blocking and polled with a
    /// timeout, so the loop turns at least every tick (the watchdog's heartbeat) and `stop()`
    /// can close reading between two reads without losing an event.
    public func run() throws {
        defer { loopEnded.store(true, ordering: .relaxed) }
        try group.descriptor.setNonBlocking()
        while true {
            loopTurns.add(1, ordering: .relaxed)
            guard try group.descriptor.waitReadable(timeoutMilliseconds: Self.loopTickMilliseconds) else {
                if readingClosed.withLock({ $0 }) { return }
                continue
            }
            // Reading and counting happen under the lock `stop()` takes: an event is either read
            // here and answered by this process, or left in the kernel queue for the successor.
            let events: [FanotifyEvent]? = try readingClosed.withLock { closed in
                if closed { return nil }
                let events = try group.readEvents(bufferSize: 64 * 1024)
                unanswered.add(events.filter { $0.isPermissionEvent && $0.fd >= 0 }.count, ordering: .relaxed)
                return events
            }
            guard let events else { return }
            for event in events { handle(event) }
        }
    }

    /// Graceful stop: no further event is read (queued ones wait in the kernel for the next
    /// ferryd), and the ones already read are answered first, for up to `drainSeconds`.
    public func stop() {
        readingClosed.withLock { $0 = true }
        let deadline = Self.monotonicMilliseconds() + UInt64(drainSeconds * 1000)
        while unanswered.load(ordering: .relaxed) > 0, Self.monotonicMilliseconds() < deadline { usleep(5_000) }
        let left = unanswered.load(ordering: .relaxed)
        if left > 0 { logger.error("stopping with unanswered requests (the next ferryd answers them EIO)", metadata: ["count": "\(left)"]) }
    }

    /// How long `stop()` waits for requests already read.
    public let drainSeconds = 20.0

    public func beginRestore() {
        parked.withLock { $0 = [] }
    }

    public func endRestore() {
        let events = parked.withLock { list -> [FanotifyEvent] in
            defer { list = nil }
            return list ?? []
        }
        for event in events { handle(event) }
        serveRecovered()
    }

    /// Fills and allows the events a killed predecessor had read and journaled (their readers
    /// are still blocked in the kernel); EIO only when the range cannot be filled.
    private func serveRecovered() {
        let entries = recovered.withLock { list -> [(InflightJournal.Entry, FileDescriptor)] in
            defer { list = [] }
            return list
        }
        guard !entries.isEmpty else { return }
        logger.notice("serving the events a previous ferryd had read and not answered", metadata: ["count": "\(entries.count)"])
        for (entry, placeholder) in entries {
            guard let file = files.withLock({ $0[entry.file] }), file.handle.acquire() else {
                logger.error("journaled event for a cache file no image uses; answering EIO", metadata: ["fd": "\(entry.fd)"])
                try? group.respond(to: entry.fd, .denyWithErrno(EIO))
                try? placeholder.close()
                continue
            }
            let end = min(file.filler.blob.uncompressedSize, entry.offset &+ entry.count)
            let group = self.group, logger = self.logger, metrics = self.metrics
            Task {
                defer {
                    file.handle.release()
                    try? placeholder.close()
                }
                do {
                    if entry.offset < end { try await file.filler.fill(entry.offset ..< end) }
                    try group.respond(to: entry.fd, .allow)
                    metrics.requestAnswered(result: "recovered")
                } catch {
                    logger.error("journaled event could not be filled, answering EIO", metadata: ["fd": "\(entry.fd)", "error": "\(error)"])
                    try? group.respond(to: entry.fd, .denyWithErrno(EIO))
                }
            }
        }
    }

    private func handle(_ event: FanotifyEvent) {
        guard event.isPermissionEvent, event.fd >= 0 else {
            if event.mask & FanotifyConstants.queueOverflow != 0 { logger.error("fanotify queue overflow") }
            if event.fd >= 0 { try? FileDescriptor(rawValue: event.fd, name: "event").close() }
            return
        }
        // Our own writes into cache files raise events too: they are the fill itself.
        if event.pid == ownPID {
            metrics.requestAnswered(result: "own_write")
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
                metrics.requestAnswered(result: "unknown_file")
                logger.error("event for a cache file no image uses; answering EIO")
                answer(event, .denyWithErrno(EIO))
            }
            return
        }
        // The cache file stays open until this fill is done, even if it is evicted meanwhile.
        guard file.handle.acquire() else {
            metrics.requestAnswered(result: "unknown_file")
            answer(event, .denyWithErrno(EIO))
            return
        }
        let blob = file.filler.blob
        file.lastUse.store(UInt64(Date().timeIntervalSince1970 * 1000), ordering: .relaxed)
        let start = event.range?.offset ?? 0
        let count = event.range?.count ?? blob.uncompressedSize
        let end = min(blob.uncompressedSize, start &+ count)
        let logger = self.logger, metrics = self.metrics, journal = self.journal
        let began = DispatchTime.now().uptimeNanoseconds
        metrics.requestStarted()
        // Recorded before the fill starts, cleared before the answer (see InflightJournal).
        let slot = journal?.record(InflightJournal.Entry(fd: event.fd, file: identity, offset: start, count: end > start ? end - start : 0))
        Task {
            defer { file.handle.release() }
            do {
                if start < end {
                    file.filler.recordAccess(start ..< end)
                    try await file.filler.fill(start ..< end)
                }
                if let slot { journal?.clear(slot) }
                self.answer(event, .allow)
                metrics.requestFinished(result: "ok", seconds: Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9)
                self.unmarkIfComplete(file)
            } catch {
                logger.error("read failed, answering EIO", metadata: ["error": "\(error)", "range": "\(start)..<\(end)"])
                if let slot { journal?.clear(slot) }
                self.answer(event, .denyWithErrno(EIO))
                metrics.requestFinished(result: "error", seconds: Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9)
            }
        }
    }

    public func cachedBlobs() -> [CachedBlob] {
        let attached = blobs.withLock { $0 }
        var out: [CachedBlob] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: cacheDirectory)) ?? [] where name.hasSuffix(".blob") {
            let blob = String(name.dropLast(5))
            if let file = attached[blob] {
                out.append(CachedBlob(blob: blob, bytes: (try? file.descriptor.allocatedBytes()) ?? 0,
                                      lastUse: Double(file.lastUse.load(ordering: .relaxed)) / 1000))
            } else if let fd = try? FileDescriptor.open("\(cacheDirectory)/\(name)", .readOnly) {
                defer { try? fd.close() }
                let modified = (try? FileManager.default.attributesOfItem(atPath: "\(cacheDirectory)/\(name)")[.modificationDate] as? Date)??
                    .timeIntervalSince1970
                out.append(CachedBlob(blob: blob, bytes: (try? fd.allocatedBytes()) ?? 0, lastUse: modified ?? 0))
            }
        }
        return out
    }

    /// Detaches the cache file (forgotten by both maps, mark removed, closed) and deletes it. Its
    /// image is not mounted, so no reader can be between an answered event and its read.
    public func evictCachedBlob(_ blob: String) -> UInt64 {
        let path = "\(cacheDirectory)/\(blob).blob"
        let file = blobs.withLock { $0.removeValue(forKey: blob) }
        var freed: UInt64 = 0
        if let file {
            if let identity = try? file.descriptor.identity() { _ = files.withLock { $0.removeValue(forKey: identity) } }
            try? group.unmark(path)
            freed = (try? file.descriptor.allocatedBytes()) ?? 0
            try? file.descriptor.truncate(to: 0)
            // A fill started before the unmount may still write: the descriptor closes after it.
            file.handle.retire()
        } else if let fd = try? FileDescriptor.open(path, .readOnly) {
            freed = (try? fd.allocatedBytes()) ?? 0
            try? fd.close()
        }
        guard unlink(path) == 0 else { return 0 }
        logger.info("evicted cache file", metadata: ["blob": "\(blob.prefix(12))", "bytes": "\(freed)"])
        return freed
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
        defer { if event.isPermissionEvent && event.fd >= 0 { unanswered.subtract(1, ordering: .relaxed) } }
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
    func write(chunk index: Int, info: ChunkInfo, bytes: ArraySlice<UInt8>) async throws {
        try descriptor.write(bytes, at: info.uncompressedOffset)
    }
}
