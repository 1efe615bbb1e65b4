import FerrySystem
import Blob
import Foundation
public import Logging
import Synchronization

/// Turns a user's image reference into a registered image: fetches and verifies the bootstrap
/// once, stores its EROFS part under `stateDirectory`, and lists the blob sources. Async end to
/// end: a slow registry suspends the mount that waits for it, never a thread others need.
public typealias ImageResolver = @Sendable (_ reference: String, _ stateDirectory: String) async throws -> RegisteredImage

/// ferryd: the image table, the control API and one kernel backend.
///
/// Mounts run concurrently: each reserves its mountpoint, resolves its image (concurrent mounts
/// of one reference share one resolution), and only the backend attach and the mount(2) call
/// itself take turns, on a queue of their own. No lock is held across an await or across I/O,
/// and no cooperative thread waits for a syscall that could wait for ferryd itself.
public final class FerryDaemon: Sendable {
    public let configuration: DaemonConfiguration
    public let backend: any KernelBackend
    private let resolver: ImageResolver
    private let mounter: any Mounter
    public let logger: Logger
    /// Fetches an image's prefetch list (and paths asked for at mount) into the store; nil without a store.
    private let prefetcher: Prefetcher?
    let started = Date()
    /// More series for `GET /metrics`, read at each scrape (peer sharing, the blob proxy).
    let extraMetrics: [@Sendable (inout MetricsWriter) -> Void]
    /// The series read at scrape time, kept in `metrics.registry`.
    let scrapedSeries: ScrapedSeries

    struct State {
        var images: [String: RegisteredImage] = [:]
        /// mountpoint → the mount there, including mounts still being made or taken down
        var mounts: [String: MountEntry] = [:]
    }
    let state = Mutex(State())
    private let listener = Mutex<HTTPListener?>(nil)
    private let stopped = Atomic<Bool>(false)
    /// Concurrent mounts of one reference share its resolution (one manifest fetch, one bootstrap download).
    private let resolutions = SingleFlight<String, RegisteredImage>()
    /// Backend attach/detach and mount(2)/umount2(2), one at a time and off the cooperative pool:
    /// a mount's first reads may need ferryd's own fills, and a new mount's bdi is found by
    /// looking before and after the call.
    private let mountSyscalls = SerialBlockingQueue()
    /// Rewrites of mounts.json, one at a time, each with the table as it is when it runs.
    private let registrationWriter = SerialBlockingQueue()
    /// Evicts cache entries no mounted image needs (nil: no local caches to manage).
    public let cache: CacheManager?
    /// Request and latency figures for `/metrics`.
    public let metrics: DaemonMetrics

    public init(configuration: DaemonConfiguration, backend: any KernelBackend, resolver: @escaping ImageResolver,
                mounter: any Mounter = KernelMounter(), cache: CacheManager? = nil, metrics: DaemonMetrics? = nil,
                logger: Logger, extraMetrics: [@Sendable (inout MetricsWriter) -> Void] = [], prefetcher: Prefetcher? = nil) {
        self.configuration = configuration
        self.prefetcher = prefetcher
        self.extraMetrics = extraMetrics
        self.backend = backend
        self.resolver = resolver
        self.mounter = mounter
        self.cache = cache
        let metrics = metrics ?? DaemonMetrics(backend: backend.name)
        self.metrics = metrics
        self.scrapedSeries = ScrapedSeries(registry: metrics.registry)
        self.logger = logger
    }

    /// The chunks and blobs of every image mounted or being mounted (what eviction must keep).
    /// An image is pinned from the moment its mount knows it, before the backend attaches it.
    public func pinnedContent() -> PinnedContent {
        let (images, mounts) = state.withLock { ($0.images, $0.mounts) }
        var pinned = PinnedContent()
        for id in Set(mounts.values.compactMap(\.imageID)) {
            guard let image = images[id] else { continue }
            pinned.blobs.formUnion(image.blobCacheKeys)
            for blob in image.metadata.blobs {
                for chunk in blob.chunks { pinned.chunks.insert(hexString(chunk.digest)) }
            }
        }
        return pinned
    }

    /// Evicts down to `target` bytes (default: the cache limit, or everything not pinned), on a
    /// thread of its own (eviction deletes files).
    public func collectGarbage(target: UInt64? = nil) async -> CacheManager.Report? {
        guard let cache else { return nil }
        return try? await DedicatedThread.run { [self] in cache.collect(pinned: pinnedContent(), target: target) }
    }

    /// Starts the backend's loop (on its own thread), re-attaches what a previous ferryd mounted,
    /// and starts the control API. Returns once the socket listens (the moment to tell systemd READY=1).
    public func start() async throws {
        let dir = (configuration.socketPath as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let backend = self.backend, logger = self.logger
        backend.beginRestore()
        Thread.detachNewThread {
            do { try backend.run() } catch { logger.critical("kernel backend stopped", metadata: ["error": "\(error)"]) }
        }
        await restoreRegistrations()
        backend.endRestore()
        cache?.startPeriodic { [self] in pinnedContent() }
        let socket = try UnixSocket.listen(at: configuration.socketPath, permissions: 0o600)
        let server = try await ControlHTTP.serve(listener: socket, limits: .controlSocket) { [self] request in await handle(request) }
        listener.withLock { $0 = server }
        logger.info("ferryd ready", metadata: ["backend": "\(backend.name)", "socket": "\(configuration.socketPath)"])
    }

    /// Stops accepting requests and stops the backend (mounts stay; a successor serves them).
    /// Stopping twice (a signal, then the service group) does nothing more.
    public func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        listener.withLock { $0 }?.close()
        backend.stop()
    }

    /// Whether a finished mount of ferryd's is at `target`.
    public func hasMount(at target: String) -> Bool {
        let canonicalTarget = MountpointPath.normalized(target)
        return state.withLock { $0.mounts[canonicalTarget]?.phase == .mounted }
    }

    /// One line for the service manager's `STATUS=`: what is served and how.
    public func statusLine() -> String {
        let (images, mounts) = state.withLock { ($0.images.count, $0.mounts.values.filter { $0.phase == .mounted }.count) }
        return "serving \(mounts) mount(s) of \(images) image(s) with \(backend.name)"
    }

    /// Nil while the backend serves normally (see `ReportsHealth`); the watchdog pings only then.
    public func healthProblem() -> String? {
        (backend as? any ReportsHealth)?.healthProblem()
    }

    /// Domain ids go into mount options: no commas, no surprises.
    static func isValidDomain(_ domain: String) -> Bool {
        (1...64).contains(domain.utf8.count) && domain.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2e || c == 0x5f || c == 0x2d
        }
    }

    /// What `POST /mounts` answers.
    public struct MountResult: Codable, Sendable {
        public var id: String
        public var backend: String
        public var mountpoint: String
        public var devices: Int
        /// Hex digest of the image's bootstrap layer, when known.
        public var bootstrap: String?
    }

    /// Registers (or reuses) the image, attaches it to the backend and mounts it at `target`
    /// (fscache: in `domainID` when given, sharing blobs with the domain's other mounts).
    /// `kernelReadaheadKiB` sets this mount's kernel readahead instead of the configuration's.
    ///
    /// Concurrent calls for different mountpoints proceed in parallel up to the mount(2) call;
    /// a second call for a mountpoint that has (or is getting) a mount is refused.
    public func mount(image reference: String, at target: String, domainID: String? = nil,
                      prefetch: [[UInt8]] = [], prefetchAll: Bool = false, kernelReadaheadKiB: Int? = nil) async throws -> MountResult {
        let canonicalTarget = MountpointPath.normalized(target)
        try state.withLock { s in
            if let existing = s.mounts[canonicalTarget] {
                let what = existing.phase == .mounted ? "ferryd already has a mount there" : "another request is \(existing.phase) there"
                throw DaemonError.mountFailed(target: canonicalTarget, reason: what)
            }
            s.mounts[canonicalTarget] = MountEntry(imageID: nil, domainID: domainID, phase: .mounting)
        }
        let image: RegisteredImage
        do {
            image = try await registeredImage(reference)
            // From here eviction keeps the image's content (pinnedContent).
            state.withLock { $0.mounts[canonicalTarget]?.imageID = image.id }
            let request = MountRequest(mountpoint: canonicalTarget, domainID: domainID)
            let backend = self.backend, mounter = self.mounter
            try await mountSyscalls.run {
                let plan = try backend.attach(image, mount: request)
                do {
                    try mounter.mount(plan, at: canonicalTarget, readaheadKiB: kernelReadaheadKiB)
                } catch {
                    backend.detach(image, mount: request)
                    throw DaemonError.mountFailed(target: canonicalTarget, reason: "\(error)")
                }
            }
        } catch {
            state.withLock { _ = $0.mounts.removeValue(forKey: canonicalTarget) }
            throw error
        }
        state.withLock { $0.mounts[canonicalTarget]?.phase = .mounted }
        if let prefetcher, prefetchAll || !prefetch.isEmpty || !image.metadata.prefetch.isEmpty {
            prefetcher.start(image, paths: image.metadata.prefetch + prefetch, everything: prefetchAll)
        }
        await saveRegistrations()
        logger.info("mounted", metadata: ["image": "\(reference)", "id": "\(image.id.prefix(12))", "at": "\(canonicalTarget)"])
        return MountResult(id: image.id, backend: backend.name, mountpoint: canonicalTarget, devices: image.metadata.blobs.count,
                           bootstrap: image.bootstrapDigest)
    }

    /// The registered image for `reference`: resolved once however many mounts ask at the same
    /// moment, and the image already in the table when its id is known.
    private func registeredImage(_ reference: String) async throws -> RegisteredImage {
        let resolver = self.resolver, stateDirectory = configuration.stateDirectory
        let resolved = try await resolutions.value(for: reference) { try await resolver(reference, stateDirectory) }
        return state.withLock { s -> RegisteredImage in
            if let existing = s.images[resolved.id] { return existing }
            s.images[resolved.id] = resolved
            return resolved
        }
    }

    /// Unmounts a mount made by `mount(image:at:)`.
    public func unmount(_ target: String) async throws {
        let canonicalTarget = MountpointPath.normalized(target)
        let entry = try state.withLock { s -> MountEntry in
            guard let entry = s.mounts[canonicalTarget] else {
                throw DaemonError.mountFailed(target: canonicalTarget, reason: "not a ferryd mount")
            }
            guard entry.phase == .mounted else {
                throw DaemonError.mountFailed(target: canonicalTarget, reason: "another request is \(entry.phase) there")
            }
            s.mounts[canonicalTarget]?.phase = .unmounting
            return entry
        }
        let mounter = self.mounter
        do {
            try await mountSyscalls.run { try mounter.unmount(canonicalTarget) }
        } catch {
            state.withLock { $0.mounts[canonicalTarget]?.phase = .mounted }
            throw error
        }
        let image = state.withLock { s -> RegisteredImage? in
            s.mounts.removeValue(forKey: canonicalTarget)
            return entry.imageID.flatMap { s.images[$0] }
        }
        if let image {
            let backend = self.backend, request = MountRequest(mountpoint: canonicalTarget, domainID: entry.domainID)
            try? await mountSyscalls.run { backend.detach(image, mount: request) }
        }
        await saveRegistrations()
    }

    /// One mount to re-attach after a restart.
    struct Registration: Codable {
        var reference: String
        var mountpoint: String
        var domain: String?
    }

    struct MountEntry {
        /// Nil until the mount has resolved its image.
        var imageID: String?
        var domainID: String?
        var phase: Phase

        enum Phase: CustomStringConvertible {
            case mounting, mounted, unmounting
            var description: String {
                switch self {
                case .mounting: return "mounting"
                case .mounted: return "mounted"
                case .unmounting: return "unmounting"
                }
            }
        }
    }

    private var registrationsPath: String { configuration.stateDirectory + "/mounts.json" }

    /// Persists the finished mounts atomically (write, fsync, rename), so a restarted ferryd
    /// serves them again. Each rewrite takes the table as it is when its turn comes, so the last
    /// one written always holds every mount finished before it.
    private func saveRegistrations() async {
        let path = registrationsPath, logger = self.logger
        do {
            try await registrationWriter.run { [self] in
                let entries: [Registration] = state.withLock { s in
                    s.mounts.sorted { $0.key < $1.key }.compactMap { mount in
                        guard mount.value.phase == .mounted, let id = mount.value.imageID, let image = s.images[id] else { return nil }
                        return Registration(reference: image.reference, mountpoint: mount.key, domain: mount.value.domainID)
                    }
                }
                try writeFileAtomically(Array(try JSONEncoder().encode(entries)), to: path, permissions: 0o600)
            }
        } catch {
            logger.error("cannot persist mounts", metadata: ["error": "\(error)"])
        }
    }

    /// Re-attaches the images of mounts a previous ferryd made that are still mounted.
    func restoreRegistrations() async {
        guard let data = FileManager.default.contents(atPath: registrationsPath) else { return }
        let entries: [Registration]
        do {
            entries = try JSONDecoder().decode([Registration].self, from: data)
        } catch {
            // Written atomically (fsync, rename, directory fsync), so damage is the disk's or a
            // hand edit: say so, keep the file for a look, and start without re-attaching.
            let kept = registrationsPath + ".damaged"
            _ = rename(registrationsPath, kept)
            logger.critical("the mount registrations are damaged; mounts made by an earlier ferryd are not served again (unmount and mount them)",
                            metadata: ["file": "\(registrationsPath)", "kept_as": "\(kept)", "error": "\(error)"])
            return
        }
        // The whole table (Foundation's file reading stops after procfs's first page).
        let mounted: Set<String>
        do {
            mounted = try MountTable.current().mountpoints(ofType: "erofs")
        } catch {
            logger.critical("cannot read the mount table; mounts made by an earlier ferryd are not served again (unmount and mount them)",
                            metadata: ["error": "\(error)"])
            return
        }
        for entry in entries where mounted.contains(entry.mountpoint) {
            do {
                let image = try await registeredImage(entry.reference)
                let backend = self.backend, request = MountRequest(mountpoint: entry.mountpoint, domainID: entry.domain)
                _ = try await mountSyscalls.run { try backend.attach(image, mount: request) }
                state.withLock { $0.mounts[entry.mountpoint] = MountEntry(imageID: image.id, domainID: entry.domain, phase: .mounted) }
                logger.notice("re-attached mount of a previous ferryd", metadata: ["at": "\(entry.mountpoint)", "image": "\(entry.reference)"])
                if let lost = backend as? any DetectsLostKernelState, lost.startedAfresh {
                    switch lost.lostKernelState {
                    case .mountsAreDead:
                    logger.critical("""
                        the cachefiles cache of the previous ferryd was withdrawn (every holder of its /dev/cachefiles descriptor \
                        ended: under systemd before 254, `systemctl stop ferryd` empties the descriptor store): this mount fails \
                        every read with EIO until it is unmounted and mounted again (restart its containers)
                        """, metadata: ["at": "\(entry.mountpoint)", "image": "\(entry.reference)"])
                    case .readsWereUnguarded:
                    // Marked again by `attach`; what readers got meanwhile may sit in the page cache.
                    let dropped = try await mountSyscalls.run { PageCache.dropCachedPages(under: entry.mountpoint) }
                    logger.critical("""
                        the kernel state of the previous ferryd was lost (its fanotify group ended with its holder): until now, \
                        reads of ranges not yet fetched were unguarded and got zeros; the mount is guarded again and its cached \
                        pages were dropped, so reads from now on are correct, but a program that read meanwhile may hold zeros \
                        (restart its containers)
                        """, metadata: ["at": "\(entry.mountpoint)", "image": "\(entry.reference)", "files dropped": "\(dropped)"])
                    }
                }
            } catch {
                logger.error("cannot re-attach mount", metadata: ["at": "\(entry.mountpoint)", "error": "\(error)"])
            }
        }
        await saveRegistrations()
    }
}
