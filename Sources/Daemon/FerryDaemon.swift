import FerrySystem
import Blob
import Foundation
public import Logging
import Synchronization

/// Turns a user's image reference into a registered image: fetches and verifies the bootstrap
/// once, stores its EROFS part under `stateDirectory`, and lists the blob sources.
public typealias ImageResolver = @Sendable (_ reference: String, _ stateDirectory: String) throws -> RegisteredImage

/// Mounts and unmounts; injected so tests and backends agree on how (mount(2) by default).
public protocol Mounter: Sendable {
    /// Mounts `plan` at `target`; `readaheadKiB` overrides the mounter's kernel readahead for
    /// this mount (nil: its default).
    func mount(_ plan: MountPlan, at target: String, readaheadKiB: Int?) throws
    func unmount(_ target: String) throws
}

/// mount(2) / umount2(2) for both kinds of plan, then the mount's kernel readahead.
public struct KernelMounter: Mounter {
    /// `read_ahead_kb` for each new mount's bdi (nil: the kernel's default, 128).
    public var readaheadKiB: Int?
    private let logger: Logger?

    public init(readaheadKiB: Int? = nil, logger: Logger? = nil) {
        self.readaheadKiB = readaheadKiB
        self.logger = logger
    }

    /// Callers serialize mounts (FerryDaemon's mount lock): the new mount's bdi is the one
    /// `erofs-N` entry that appears across the mount(2) call.
    public func mount(_ plan: MountPlan, at target: String, readaheadKiB override: Int? = nil) throws {
        let readaheadKiB = override ?? self.readaheadKiB
        let before = readaheadKiB == nil ? [] : Mount.ReadaheadControl.erofsBDINames()
        switch plan {
        case let .fileBacked(bootstrap, devices): try Mount.erofs(file: bootstrap, devices: devices, at: target)
        case let .fscache(fsid, domainID): try Mount.erofsOnDemand(fsid: fsid, domainID: domainID, at: target)
        }
        guard let readaheadKiB else { return }
        let added = Mount.ReadaheadControl.erofsBDINames().subtracting(before)
        guard added.count == 1, let bdi = added.first else {
            // Another EROFS mount made at the same moment outside ferryd: which bdi is ours is unknown.
            logger?.warning("kernel readahead left at the default", metadata: ["at": "\(target)", "new EROFS bdis": "\(added.sorted())"])
            return
        }
        do {
            try Mount.ReadaheadControl.setReadahead(kib: readaheadKiB, bdi: bdi)
        } catch {
            logger?.warning("cannot set kernel readahead", metadata: ["at": "\(target)", "bdi": "\(bdi)", "error": "\(error)"])
        }
    }
    public func unmount(_ target: String) throws { try Mount.unmount(target) }
}

/// ferryd: the image table, the control API and one kernel backend.
public final class FerryDaemon: Sendable {
    public let configuration: DaemonConfiguration
    public let backend: any KernelBackend
    private let resolver: ImageResolver
    private let mounter: any Mounter
    private let logger: Logger
    /// Fetches an image's prefetch list (and paths asked for at mount) into the store; nil without a store.
    private let prefetcher: Prefetcher?
    private let started = Date()
    /// More Prometheus text appended to `GET /metrics` (peer sharing, the blob proxy).
    private let extraMetrics: [@Sendable () -> String]

    private struct State {
        var images: [String: RegisteredImage] = [:]
        /// mountpoint → image id and the domain it was mounted in
        var mounts: [String: MountEntry] = [:]
    }
    private let state = Mutex(State())
    private let listener = Mutex<FileDescriptor?>(nil)
    /// Held while mounting or unmounting and while evicting, so eviction never sees an image
    /// attached but not yet recorded as mounted.
    private let mountLock = NSLock()
    /// Evicts cache entries no mounted image needs (nil: no local caches to manage).
    public let cache: CacheManager?
    /// Request and latency figures for `/metrics`.
    public let metrics: DaemonMetrics

    public init(configuration: DaemonConfiguration, backend: any KernelBackend, resolver: @escaping ImageResolver,
                mounter: any Mounter = KernelMounter(), cache: CacheManager? = nil, metrics: DaemonMetrics = DaemonMetrics(),
                logger: Logger, extraMetrics: [@Sendable () -> String] = [], prefetcher: Prefetcher? = nil) {
        self.configuration = configuration
        self.prefetcher = prefetcher
        self.extraMetrics = extraMetrics
        self.backend = backend
        self.resolver = resolver
        self.mounter = mounter
        self.cache = cache
        self.metrics = metrics
        self.logger = logger
    }

    /// The chunks and blobs of every mounted image (what eviction must keep).
    public func pinnedContent() -> PinnedContent {
        let (images, mounts) = state.withLock { ($0.images, $0.mounts) }
        var pinned = PinnedContent()
        for id in Set(mounts.values.map(\.imageID)) {
            guard let image = images[id] else { continue }
            for blob in image.metadata.blobs {
                pinned.blobs.insert(blob.hexDigest)
                for chunk in blob.chunks { pinned.chunks.insert(hexString(chunk.digest)) }
            }
        }
        return pinned
    }

    /// Evicts down to `target` bytes (default: the cache limit, or everything not pinned).
    public func collectGarbage(target: UInt64? = nil) -> CacheManager.Report? {
        guard let cache else { return nil }
        mountLock.lock()
        defer { mountLock.unlock() }
        return cache.collect(pinned: pinnedContent(), target: target)
    }

    /// Starts the backend's loop and the control API, each on its own thread. Returns once the
    /// socket listens (the moment to tell systemd READY=1).
    public func start() throws {
        let dir = (configuration.socketPath as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let backend = self.backend, logger = self.logger
        backend.beginRestore()
        Thread.detachNewThread {
            do { try backend.run() } catch { logger.critical("kernel backend stopped", metadata: ["error": "\(error)"]) }
        }
        restoreRegistrations()
        backend.endRestore()
        cache?.startPeriodic { [self] in
            mountLock.lock()
            defer { mountLock.unlock() }
            return pinnedContent()
        }
        let socket = try UnixSocket.listen(at: configuration.socketPath, permissions: 0o600)
        listener.withLock { $0 = socket }
        ControlHTTP.serve(listener: socket) { [self] request in await handle(request) }
        logger.info("ferryd ready", metadata: ["backend": "\(backend.name)", "socket": "\(configuration.socketPath)"])
    }

    /// Stops accepting requests and stops the backend (mounts stay; a successor serves them).
    public func stop() {
        if let socket = listener.withLock({ $0 }) { UnixSocket.shutdown(socket) }
        backend.stop()
    }

    /// One line for the service manager's `STATUS=`: what is served and how.
    public func statusLine() -> String {
        let (images, mounts) = state.withLock { ($0.images.count, $0.mounts.count) }
        return "serving \(mounts) mount(s) of \(images) image(s) with \(backend.name)"
    }

    /// Nil while the backend serves normally (see `ReportsHealth`); the watchdog pings only then.
    public func healthProblem() -> String? {
        (backend as? any ReportsHealth)?.healthProblem()
    }

    /// Routes one control request.
    public func handle(_ request: ControlRequest) async -> ControlResponse {
        switch (request.method, request.path) {
        case ("GET", "/health"):
            if let problem = healthProblem() {
                return .json(["status": "unhealthy", "backend": backend.name, "problem": problem], status: 503)
            }
            return .json(["status": "ok", "backend": backend.name])
        case ("GET", "/images"):
            return .json(imageSummaries())
        case ("GET", "/metrics"):
            return ControlResponse(status: 200, contentType: "text/plain; version=0.0.4", body: Array(metricsText().utf8))
        case ("POST", "/mounts"):
            struct Body: Decodable {
                var image: String; var mountpoint: String; var backend: String?; var domain: String?
                var prefetch: [String]?; var prefetch_all: Bool?; var kernel_readahead_kb: Int?
            }
            guard let body = try? JSONDecoder().decode(Body.self, from: Data(request.body)) else {
                return .error("expected {\"image\": REF, \"mountpoint\": PATH}", status: 400)
            }
            if let wanted = body.backend, wanted != "auto", wanted != backend.name {
                return .error("ferryd serves this kernel with the \(backend.name) backend; start it with --backend \(wanted) to use \(wanted)",
                              status: 409)
            }
            do {
                if let domain = body.domain, !Self.isValidDomain(domain) {
                    return .error("domain \"\(domain)\": use 1–64 letters, digits, '.', '_' or '-'", status: 400)
                }
                if let kib = body.kernel_readahead_kb, let problem = DaemonConfiguration.kernelReadaheadProblem(kib) {
                    return .error("kernel_readahead_kb \(kib): \(problem)", status: 400)
                }
                let result = try mount(image: body.image, at: body.mountpoint, domainID: body.domain,
                                       prefetch: (body.prefetch ?? []).map { Array($0.utf8.drop(while: { $0 == UInt8(ascii: "/") })) },
                                       prefetchAll: body.prefetch_all ?? false, kernelReadaheadKiB: body.kernel_readahead_kb)
                return .json(result, status: 201)
            } catch {
                logger.error("mount failed", metadata: ["image": "\(body.image)", "error": "\(error)"])
                return .error("\(error)", status: 500)
            }
        case ("GET", "/cache"):
            guard let cache else { return .json(CacheState(limit: nil, storeBytes: 0, blobCacheBytes: 0, storeWritesSuspended: false)) }
            let usage = cache.usage()
            return .json(CacheState(limit: cache.limit, storeBytes: usage.storeBytes, blobCacheBytes: usage.blobCacheBytes,
                                    storeWritesSuspended: cache.storeWritesSuspended))
        case ("POST", "/gc"):
            struct Body: Decodable { var target: UInt64? }
            let body = request.body.isEmpty ? nil : try? JSONDecoder().decode(Body.self, from: Data(request.body))
            guard let report = collectGarbage(target: body?.target) else {
                return .error("ferryd keeps no local caches (chunk_store is off and the backend has none)", status: 409)
            }
            return .json(report)
        case ("DELETE", "/mounts"):
            guard let path = request.query["path"] else { return .error("missing ?path=MOUNTPOINT", status: 400) }
            do {
                try unmount(path)
                return .json(["unmounted": path])
            } catch {
                return .error("\(error)", status: 500)
            }
        default:
            return .error("no route for \(request.method) \(request.path)", status: 404)
        }
    }

    /// Domain ids go into mount options: no commas, no surprises.
    static func isValidDomain(_ domain: String) -> Bool {
        (1...64).contains(domain.utf8.count) && domain.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2e || c == 0x5f || c == 0x2d
        }
    }

    /// What `GET /cache` answers.
    public struct CacheState: Codable, Sendable {
        public var limit: UInt64?
        public var storeBytes: UInt64
        public var blobCacheBytes: UInt64
        public var storeWritesSuspended: Bool
    }

    /// What `POST /mounts` answers.
    public struct MountResult: Codable, Sendable {
        public var id: String
        public var backend: String
        public var mountpoint: String
        public var devices: Int
    }

    /// Registers (or reuses) the image, attaches it to the backend and mounts it at `target`
    /// (fscache: in `domainID` when given, sharing blobs with the domain's other mounts).
    /// `kernelReadaheadKiB` sets this mount's kernel readahead instead of the configuration's.
    public func mount(image reference: String, at target: String, domainID: String? = nil,
                      prefetch: [[UInt8]] = [], prefetchAll: Bool = false, kernelReadaheadKiB: Int? = nil) throws -> MountResult {
        mountLock.lock()
        defer { mountLock.unlock() }
        let canonicalTarget = (target as NSString).standardizingPath
        if state.withLock({ $0.mounts[canonicalTarget] }) != nil {
            throw DaemonError.mountFailed(target: canonicalTarget, reason: "ferryd already has a mount there")
        }
        let resolved = try resolver(reference, configuration.stateDirectory)
        let image = state.withLock { s -> RegisteredImage in
            if let existing = s.images[resolved.id] { return existing }
            s.images[resolved.id] = resolved
            return resolved
        }
        let request = MountRequest(mountpoint: canonicalTarget, domainID: domainID)
        let plan = try backend.attach(image, mount: request)
        do {
            try mounter.mount(plan, at: canonicalTarget, readaheadKiB: kernelReadaheadKiB)
        } catch {
            backend.detach(image, mount: request)
            throw DaemonError.mountFailed(target: canonicalTarget, reason: "\(error)")
        }
        state.withLock { $0.mounts[canonicalTarget] = MountEntry(imageID: image.id, domainID: domainID) }
        if let prefetcher, prefetchAll || !prefetch.isEmpty || !image.metadata.prefetch.isEmpty {
            prefetcher.start(image, paths: image.metadata.prefetch + prefetch, everything: prefetchAll)
        }
        saveRegistrations()
        logger.info("mounted", metadata: ["image": "\(reference)", "id": "\(image.id.prefix(12))", "at": "\(canonicalTarget)"])
        return MountResult(id: image.id, backend: backend.name, mountpoint: canonicalTarget, devices: image.metadata.blobs.count)
    }

    /// Unmounts a mount made by `mount(image:at:)`.
    public func unmount(_ target: String) throws {
        mountLock.lock()
        defer { mountLock.unlock() }
        let canonicalTarget = (target as NSString).standardizingPath
        guard state.withLock({ $0.mounts[canonicalTarget] }) != nil else {
            throw DaemonError.mountFailed(target: canonicalTarget, reason: "not a ferryd mount")
        }
        try mounter.unmount(canonicalTarget)
        let (entry, image) = state.withLock { s in
            let entry = s.mounts.removeValue(forKey: canonicalTarget)
            return (entry, entry.flatMap { s.images[$0.imageID] })
        }
        if let entry, let image { backend.detach(image, mount: MountRequest(mountpoint: canonicalTarget, domainID: entry.domainID)) }
        saveRegistrations()
    }

    /// One mount to re-attach after a restart.
    struct Registration: Codable {
        var reference: String
        var mountpoint: String
        var domain: String?
    }

    struct MountEntry {
        var imageID: String
        var domainID: String?
    }

    private var registrationsPath: String { configuration.stateDirectory + "/mounts.json" }

    /// Persists the mounts atomically (write, fsync, rename), so a restarted ferryd serves them again.
    private func saveRegistrations() {
        let entries: [Registration] = state.withLock { s in
            s.mounts.sorted { $0.key < $1.key }.compactMap { mount in
                s.images[mount.value.imageID].map { Registration(reference: $0.reference, mountpoint: mount.key, domain: mount.value.domainID) }
            }
        }
        do {
            try writeFileAtomically(Array(try JSONEncoder().encode(entries)), to: registrationsPath, permissions: 0o600)
        } catch {
            logger.error("cannot persist mounts", metadata: ["error": "\(error)"])
        }
    }

    /// Re-attaches the images of mounts a previous ferryd made that are still mounted.
    private func restoreRegistrations() {
        guard let data = FileManager.default.contents(atPath: registrationsPath),
              let entries = try? JSONDecoder().decode([Registration].self, from: data) else { return }
        let mounted = Set(((try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[2] == "erofs" ? String(fields[1]) : nil
        })
        for entry in entries where mounted.contains(entry.mountpoint) {
            do {
                let resolved = try resolver(entry.reference, configuration.stateDirectory)
                let image = state.withLock { s -> RegisteredImage in
                    if let existing = s.images[resolved.id] { return existing }
                    s.images[resolved.id] = resolved
                    return resolved
                }
                _ = try backend.attach(image, mount: MountRequest(mountpoint: entry.mountpoint, domainID: entry.domain))
                state.withLock { $0.mounts[entry.mountpoint] = MountEntry(imageID: image.id, domainID: entry.domain) }
                logger.notice("re-attached mount of a previous ferryd", metadata: ["at": "\(entry.mountpoint)", "image": "\(entry.reference)"])
            } catch {
                logger.error("cannot re-attach mount", metadata: ["at": "\(entry.mountpoint)", "error": "\(error)"])
            }
        }
        saveRegistrations()
    }

    /// Per-image figures for `GET /images` and `ferry status`.
    public struct ImageSummary: Codable, Sendable {
        public var id: String
        public var reference: String
        public var mountpoints: [String]
        public var blobs: Int
        public var chunks: Int
        public var uncompressedBytes: UInt64
        public var bytesRequested: Int
        public var bytesFetched: UInt64
        /// What `bytesFetched` holds once decompressed.
        public var uncompressedBytesFetched: Int
        public var bytesBySource: [String: UInt64]
        public var chunksVerified: Int
        public var chunksFailed: Int
        public var cacheHits: Int
        public var storeHits: Int
        /// Bytes of the image's blob caches on disk (cache files), shared with images using the same blobs.
        public var cachedBytes: UInt64?
    }

    public func imageSummaries() -> [ImageSummary] {
        let (images, mounts) = state.withLock { ($0.images, $0.mounts) }
        let cached = (backend as? any EvictsCachedBlobs).map { Dictionary($0.cachedBlobs().map { ($0.blob, $0.bytes) }, uniquingKeysWith: +) }
        return images.values.sorted { $0.id < $1.id }.map { image in
            let s = image.stats
            return ImageSummary(
                id: image.id, reference: image.reference,
                mountpoints: mounts.filter { $0.value.imageID == image.id }.map(\.key).sorted(),
                blobs: image.metadata.blobs.count, chunks: image.metadata.blobs.reduce(0) { $0 + $1.chunks.count },
                uncompressedBytes: image.metadata.blobs.reduce(0) { $0 + $1.uncompressedSize },
                bytesRequested: s.bytesRequested.current, bytesFetched: s.bytesFetched,
                uncompressedBytesFetched: s.uncompressedBytesFetched.current, bytesBySource: s.bytesBySource,
                chunksVerified: s.chunksVerified.current, chunksFailed: s.chunksFailed.current,
                cacheHits: s.cacheHits.current, storeHits: s.storeHits.current,
                cachedBytes: cached.map { c in image.metadata.blobs.reduce(0) { $0 + (c[$1.hexDigest] ?? 0) } })
        }
    }

    /// Prometheus text exposition of the daemon's counters.
    public func metricsText() -> String {
        var out = ""
        func metric(_ name: String, _ help: String, _ type: String, _ samples: [(String, String)]) {
            out += "# HELP ferry_\(name) \(help)\n# TYPE ferry_\(name) \(type)\n"
            for (labels, value) in samples { out += "ferry_\(name)\(labels) \(value)\n" }
        }
        let images = imageSummaries()
        func per(_ value: (ImageSummary) -> String) -> [(String, String)] {
            images.map { ("{image=\"\($0.id.prefix(12))\"}", value($0)) }
        }
        metric("images", "Images registered with ferryd.", "gauge", [("", "\(images.count)")])
        metric("bytes_requested_total", "Bytes the kernel asked for.", "counter", per { "\($0.bytesRequested)" })
        metric("chunks_verified_total", "Chunks fetched and verified.", "counter", per { "\($0.chunksVerified)" })
        metric("chunk_verify_failures_total", "Chunks a source returned with wrong bytes.", "counter", per { "\($0.chunksFailed)" })
        metric("cache_hits_total", "Chunks found already in the cache.", "counter", per { "\($0.cacheHits)" })
        metric("store_hits_total", "Chunks served from the local chunk store.", "counter", per { "\($0.storeHits)" })
        var bySource: [(String, String)] = []
        for image in images {
            for (source, bytes) in image.bytesBySource.sorted(by: { $0.key < $1.key }) {
                bySource.append(("{image=\"\(image.id.prefix(12))\",source=\"\(source)\"}", "\(bytes)"))
            }
        }
        metric("bytes_fetched_total", "Compressed bytes fetched, by source.", "counter", bySource)
        metric("uptime_seconds", "Seconds since ferryd started.", "gauge", [("", String(format: "%.0f", Date().timeIntervalSince(started)))])
        for more in extraMetrics { out += more() }
        return out + serviceMetricsText()
    }
}
