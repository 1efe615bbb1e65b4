public import Daemon
import Blob
public import FerrySystem
import Foundation
public import Logging
import Synchronization

/// The `fscache` backend (Linux 5.19–6.x with `CONFIG_CACHEFILES_ONDEMAND` and
/// `CONFIG_EROFS_FS_ONDEMAND`): the kernel mounts `erofs -o fsid=…[,domain_id=…]`, opens each
/// image's bootstrap and blobs as cachefiles cookies and, for every range not yet in its cache
/// file, asks ferryd through `/dev/cachefiles`. ferryd answers OPEN with the object's size,
/// fills READ ranges with verified chunks written through io_uring into the object's anonymous
/// fd, then completes the request. A failed fill still completes it: the kernel finds the hole
/// and the reader gets EIO, never wrong bytes.
///
/// Cookie keys: an image's primary cookie is its fsid (its bootstrap); a blob's is the 64-hex
/// device-slot tag the converter wrote (its digest). Volume key: `erofs,<domain_id or fsid>`.
/// See `Kernel-Notes/cachefiles-ondemand.md`.
public final class FscacheBackend: KernelBackend, HandsOverDescriptors, DetectsLostKernelState {
    public let name = "fscache"
    private let device: CachefilesDevice
    private let ring: RingService
    private let store: ChunkStore?
    private let gate: FetchGate
    private let limits: FillLimits
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)

    /// What ferryd can serve: fsid → the mount's image and volume; per volume, device tag (blob
    /// digest) → the blob's chunk table and the image that registered it. A blob is looked up only
    /// in the volume of the mount that opens it: the mounting image's own, or the domain it shares.
    private struct Catalog {
        var fsids: [String: (image: RegisteredImage, volume: String)] = [:]
        var blobs: [String: [String: (blob: BlobInfo, key: String, image: RegisteredImage)]] = [:]
        var volumes: Set<String> = []
    }
    /// Where the chunk table each shared domain first used for a blob is recorded (one file per
    /// domain and tag), so a conflicting image is refused after a restart too; nil: not recorded.
    private let domainRecords: String?
    private let catalog = Mutex(Catalog())
    /// Open objects by the kernel's object id.
    private let objects = Mutex<[UInt32: FscacheObject]>([:])
    /// Messages that name keys not registered yet, held while a restarted ferryd re-attaches.
    private let parked = Mutex<[CachefilesMessage]?>(nil)

    /// True when the device was opened and bound here rather than taken over: mounts a previous
    /// ferryd left lost their cache with its device.
    public let startedAfresh: Bool
    public var lostKernelState: LostKernelState { .mountsAreDead }

    /// - Parameters:
    ///   - device: `/dev/cachefiles`, already bound (`bindOnDemand`) or taken over from a
    ///     previous ferryd (then `restore` is written when serving starts).
    ///   - startedAfresh: the device was bound by this ferryd, not taken over.
    ///   - domainRecords: a directory for the chunk tables that shared domains use (see `attach`).
    public init(device: CachefilesDevice, store: ChunkStore?, gate: FetchGate, limits: FillLimits = FillLimits(),
                startedAfresh: Bool = false, domainRecords: String? = nil, logger: Logger) throws {
        self.device = device
        self.startedAfresh = startedAfresh
        self.domainRecords = domainRecords
        self.ring = try RingService(entries: 64)
        self.store = store
        self.gate = gate
        self.limits = limits
        self.logger = logger
    }

    /// The device descriptor (to hand to a successor or a holder process).
    public var deviceDescriptor: FileDescriptor { device.descriptor }

    /// The bound `/dev/cachefiles`, stored as `cachefiles`: closing its last descriptor kills the cache.
    public var descriptorsToKeep: [(name: String, fd: FileDescriptor)] { [(HandedOverDescriptor.cachefiles, device.descriptor)] }

    /// The fsid of a mount: stable for an image at a mountpoint (a restarted ferryd recomputes it
    /// and recognises the kernel's re-sent OPENs), distinct between mountpoints (the kernel
    /// refuses a primary cookie twice in one domain).
    public static func fsid(imageID: String, mountpoint: String) -> String {
        "ferry-" + hexString(SHA256.hash(Array("\(imageID)\n\(mountpoint)".utf8))).prefix(24)
    }

    /// Registers the mount's fsid and its blobs in its volume. In a shared domain the kernel keys
    /// a blob's cache object by its device tag (the blob digest) alone and keeps its data across
    /// mounts, so every image in a domain must describe a shared blob with the same chunk table:
    /// an image whose table differs from the one the domain uses is refused (else it would read,
    /// or decide, the other images' bytes).
    public func attach(_ image: RegisteredImage, mount: MountRequest) throws -> MountPlan {
        let fsid = Self.fsid(imageID: image.id, mountpoint: mount.mountpoint)
        let volume = "erofs," + (mount.domainID ?? fsid)
        if let domain = mount.domainID { try recordTables(of: image, domain: domain) }
        try catalog.withLock { c in
            var blobs = c.blobs[volume] ?? [:]
            for (blob, key) in zip(image.metadata.blobs, image.blobCacheKeys) {
                if let known = blobs[blob.hexDigest], known.key != key {
                    throw DaemonError.mountFailed(target: mount.mountpoint, reason: """
                        blob \(blob.hexDigest.prefix(12)) has another chunk table in image \(image.reference) than in \
                        \(known.image.reference), already mounted in domain \(mount.domainID ?? "-"); mount it in another domain
                        """)
                }
                if blobs[blob.hexDigest] == nil { blobs[blob.hexDigest] = (blob, key, image) }
            }
            c.blobs[volume] = blobs
            c.fsids[fsid] = (image, volume)
            c.volumes.insert(volume)
        }
        return .fscache(fsid: fsid, domainID: mount.domainID)
    }

    /// Records the cache key of each blob the first time `domain` uses it, and refuses an image
    /// whose key differs from a recorded one (the kernel's cache for the domain may hold the
    /// earlier table's bytes, whoever is mounted now).
    private func recordTables(of image: RegisteredImage, domain: String) throws {
        guard let domainRecords else { return }
        let directory = "\(domainRecords)/\(hexString(SHA256.hash(Array(domain.utf8))).prefix(32))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for (blob, key) in zip(image.metadata.blobs, image.blobCacheKeys) {
            let path = "\(directory)/\(blob.hexDigest)"
            if let recorded = FileManager.default.contents(atPath: path).map({ String(decoding: $0, as: UTF8.self) }) {
                guard recorded == key else {
                    throw DaemonError.mountFailed(target: domain, reason: """
                        blob \(blob.hexDigest.prefix(12)) of \(image.reference) has another chunk table than the one domain \
                        \(domain) cached it with; mount it in another domain
                        """)
                }
                continue
            }
            try writeFileAtomically(Array(key.utf8), to: path, permissions: 0o600)
        }
    }

    public func detach(_ image: RegisteredImage, mount: MountRequest) {
        let fsid = Self.fsid(imageID: image.id, mountpoint: mount.mountpoint)
        catalog.withLock { c in
            _ = c.fsids.removeValue(forKey: fsid)
            // A volume of its own ends with the mount; a shared domain's blobs stay for its other images.
            if mount.domainID == nil { c.blobs["erofs," + fsid] = nil }
        }
    }

    /// Serves requests through io_uring until `stop()`.
    public func run() throws {
        // A successor re-reads what its predecessor had read but not answered (a no-op on a fresh device).
        do { try device.send(.restore) } catch { logger.warning("cachefiles restore refused", metadata: ["error": "\(error)"]) }
        try ring.run(device: device.descriptor, messageSize: CachefilesMessage.maxSize) { bytes in
            do {
                handle(try CachefilesMessage.parse(bytes[...]))
            } catch {
                logger.error("unreadable cachefiles message", metadata: ["error": "\(error)"])
            }
        }
        // Stopped for a successor: the anonymous object descriptors stay open until this process
        // exits, all at once with the device's, as in a crash, which is the hand-over `restore`
        // is built for. Closing them one by one while the device stays open (the holder keeps it)
        // left readers of those objects waiting for good in the 6.1 guest (FscacheGuestTests'
        // SIGTERM rounds). Any other end of the loop: objects are the kernel's, a successor gets
        // OPENs again for them.
        guard !stopping.load(ordering: .relaxed) else { return }
        objects.withLock { table in
            for object in table.values { object.handle.retire() }
            table = [:]
        }
    }

    public func stop() {
        stopping.store(true, ordering: .relaxed)
        ring.stop()
    }

    public func beginRestore() { parked.withLock { $0 = [] } }

    public func endRestore() {
        let held = parked.withLock { list -> [CachefilesMessage] in
            defer { list = nil }
            return list ?? []
        }
        for message in held { handle(message) }
    }

    /// Holds `message` while restoring; false when not restoring.
    private func park(_ message: CachefilesMessage) -> Bool {
        parked.withLock { list in
            guard list != nil else { return false }
            list?.append(message)
            return true
        }
    }

    private func handle(_ message: CachefilesMessage) {
        switch message.request {
        case let .open(open):
            self.open(open, message: message)
        case let .read(offset, length):
            guard let object = objects.withLock({ $0[message.objectID] }) else {
                if park(message) { return }
                logger.error("READ for an object ferryd did not open", metadata: ["object": "\(message.objectID)"])
                return
            }
            // The object's fd stays open until this fill has completed its READ, even if the
            // kernel's CLOSE for the object arrives meanwhile.
            guard object.handle.acquire() else {
                logger.error("READ for an object already closed", metadata: ["object": "\(message.objectID)"])
                return
            }
            Task {
                await self.read(object, messageID: message.messageID, offset: offset, length: length)
                object.handle.release()
            }
        case .close:
            if let object = objects.withLock({ $0.removeValue(forKey: message.objectID) }) {
                object.handle.retire()
                logger.debug("object closed", metadata: ["object": "\(message.objectID)", "key": "\(object.key)"])
            }
        case let .unknown(opcode, _):
            logger.warning("cachefiles request with unknown opcode ignored", metadata: ["opcode": "\(opcode)"])
        }
    }

    private func open(_ open: CachefilesOpen, message: CachefilesMessage) {
        let anonymous = FileDescriptor(rawValue: open.fd, name: "cachefiles object \(message.objectID)")
        let key = open.cookieKeyString
        let content: FscacheObject.Content? = catalog.withLock { c in
            guard c.volumes.contains(open.volumeKey) else { return nil }
            if let entry = c.fsids[key], entry.volume == open.volumeKey {
                return .bootstrap(path: entry.image.bootstrapPath, stats: entry.image.stats)
            }
            if let entry = c.blobs[open.volumeKey]?[key] { return .blob(entry.blob, entry.image) }
            return nil
        }
        guard let content else {
            if park(message) { return }
            logger.error("OPEN for a cookie no mounted image has", metadata: ["volume": "\(open.volumeKey)", "cookie": "\(key)"])
            reply(.openFailed(messageID: message.messageID, errno: ENOENT))
            try? anonymous.close()
            return
        }
        do {
            let object: FscacheObject
            switch content {
            case let .bootstrap(path, stats):
                let file = try FileDescriptor.open(path, .readOnly)
                object = FscacheObject(key: key, descriptor: anonymous, size: try file.size(), source: .file(file, stats))
            case let .blob(blob, image):
                let sink = FscacheSink(descriptor: anonymous, ring: ring)
                let filler = BlobFiller(blob: blob, store: store, sources: image.sources, sink: sink, limits: limits, gate: gate, stats: image.stats,
                                        trace: image.accessTrace(of: blob))
                object = FscacheObject(key: key, descriptor: anonymous, size: blob.uncompressedSize, source: .filler(filler))
            }
            objects.withLock { $0[message.objectID] = object }
            reply(.openComplete(messageID: message.messageID, size: Int64(object.size)))
            logger.debug("object opened", metadata: ["object": "\(message.objectID)", "key": "\(key)", "size": "\(object.size)"])
        } catch {
            logger.error("cannot open object", metadata: ["cookie": "\(key)", "error": "\(error)"])
            reply(.openFailed(messageID: message.messageID, errno: EIO))
            try? anonymous.close()
        }
    }

    /// Fills `offset ..< offset+length` of the object, then completes the READ, whatever happened.
    private func read(_ object: FscacheObject, messageID: UInt32, offset: UInt64, length: UInt64) async {
        let end = min(object.size, offset &+ length)
        do {
            if offset < end {
                switch object.source {
                case let .filler(filler):
                    filler.recordAccess(offset ..< end)
                    try await filler.fill(offset ..< end)
                case let .file(file, stats):
                    stats.bytesRequested.add(Int(end - offset))
                    try await copy(file, range: offset ..< end, into: object)
                }
            }
        } catch {
            logger.error("read failed, the reader gets EIO", metadata: ["object": "\(object.key)", "range": "\(offset)+\(length)", "error": "\(error)"])
        }
        do {
            try CachefilesObject.readComplete(fd: object.descriptor.rawValue, messageID: messageID)
        } catch {
            logger.error("cannot complete READ", metadata: ["object": "\(object.key)", "error": "\(error)"])
        }
    }

    /// Copies a page-aligned cover of `range` of a local file (the bootstrap) into the object.
    private func copy(_ file: FileDescriptor, range: Range<UInt64>, into object: FscacheObject) async throws {
        let page = UInt64(AlignedBuffer.pageSize)
        let start = range.lowerBound / page * page
        let end = (range.upperBound + page - 1) / page * page
        let buffer = try AlignedBuffer(count: Int(end - start))
        let n = try file.read(into: buffer, count: Int(min(end, object.size) - start), at: start)
        buffer.zero(n ..< buffer.count)
        let result = await ring.write(object.descriptor, buffer: TransferredBuffer(buffer), count: buffer.count, at: start)
        guard result == Int32(buffer.count) else {
            throw SystemError.syscall("write \(buffer.count) bytes at \(start) into \(object.key)", errno: result < 0 ? -result : EIO)
        }
    }

    private func reply(_ command: CachefilesCommand) {
        do { try device.send(command) } catch {
            logger.error("cachefiles reply refused", metadata: ["command": "\(command.text)", "error": "\(error)"])
        }
    }
}

/// One object the kernel opened: its anonymous fd and where its bytes come from.
final class FscacheObject: Sendable {
    enum Content {
        case bootstrap(path: String, stats: FillStatistics)
        case blob(BlobInfo, RegisteredImage)
    }
    enum Source: Sendable {
        case file(FileDescriptor, FillStatistics)
        case filler(BlobFiller)
    }
    let key: String
    /// The anonymous fd, closed after the kernel's CLOSE and the last READ in progress.
    let handle: SharedDescriptor
    var descriptor: FileDescriptor { handle.descriptor }
    let size: UInt64
    let source: Source
    init(key: String, descriptor: FileDescriptor, size: UInt64, source: Source) {
        self.key = key
        self.handle = SharedDescriptor(descriptor)
        self.size = size
        self.source = source
    }
}

/// Writes verified chunks into an object's anonymous fd through the ring: direct I/O, so each
/// chunk goes from a page-aligned buffer, zero-padded to whole blocks.
struct FscacheSink: ChunkSink {
    let descriptor: FileDescriptor
    let ring: RingService
    func write(chunk index: Int, info: ChunkInfo, bytes: ArraySlice<UInt8>) async throws {
        let buffer = try AlignedBuffer(count: Int(info.alignedSize))
        try buffer.copy(from: bytes)
        let result = await ring.write(descriptor, buffer: TransferredBuffer(buffer), count: buffer.count, at: info.uncompressedOffset)
        guard result == Int32(buffer.count) else {
            throw SystemError.syscall("write chunk \(index) (\(buffer.count) bytes at \(info.uncompressedOffset)) into \(descriptor.name)",
                                      errno: result < 0 ? -result : EIO)
        }
    }
}
