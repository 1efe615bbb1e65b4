import ArgumentParser
import Blob
import Converter
import Daemon
import FerrySystem
import Foundation
import KernelBackends
import Logging
import OCI
import Registry

/// The `ferryd` command line: flags on top of the configuration file.
struct FerryDaemonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferryd",
        abstract: "Serve Ferry images to the kernel lazily (fanotify pre-content or cachefiles on demand).")

    @Option(help: "JSON configuration file (default /etc/ferry/ferryd.json when present).") var config: String?
    @Option(help: "State directory for bootstraps, cache files and the chunk store.") var stateDir: String?
    @Option(help: "Control API socket.") var socket: String?
    @Option(help: "Kernel backend: auto, fanotify or fscache.") var backend: String?
    @Option(help: "Log level (trace … critical).") var logLevel: String?
    @Option(name: .customLong("plain-http"), help: "Registry host[:port] reached over plain HTTP (repeatable).") var plainHTTP: [String] = []
    @Option(help: "Bytes the chunk store and cache files of unmounted images may use (e.g. 20G, 512M).") var cacheLimit: String?
    @Option(help: "Also serve the Prometheus metrics over TCP at HOST:PORT (e.g. 127.0.0.1:9797).") var metricsListen: String?

    init() {}

    func run() throws {
        var configuration = DaemonConfiguration()
        let configPath = config ?? (FileManager.default.fileExists(atPath: "/etc/ferry/ferryd.json") ? "/etc/ferry/ferryd.json" : nil)
        do {
            if let configPath { configuration = try DaemonConfiguration.load(path: configPath) }
        } catch {
            FileHandle.standardError.write(Data("ferryd: \(error)\n".utf8))
            throw ExitCode.failure
        }
        if let stateDir { configuration.stateDirectory = stateDir }
        if let socket { configuration.socketPath = socket }
        if let backend { configuration.backend = backend }
        if let logLevel { configuration.logLevel = logLevel }
        configuration.plainHTTP += plainHTTP
        if let cacheLimit {
            guard let bytes = parseByteCount(cacheLimit) else {
                FileHandle.standardError.write(Data("ferryd: --cache-limit \(cacheLimit) is not a size such as 512M or 20G\n".utf8))
                throw ExitCode.failure
            }
            configuration.cacheLimit = bytes
        }
        if let metricsListen { configuration.metricsListen = metricsListen }
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "ferryd")
        // Descriptors a service manager passed back (its store), and the link to it, if any.
        let inherited = SystemdListenDescriptors.take()
        let service = SystemdService.fromEnvironment(logger: logger)
        do {
            let daemon = try DaemonAssembly.make(configuration: configuration, logger: logger, inherited: inherited,
                                                 holdGroupInProcess: !service.isActive)
            try daemon.start()
            if let address = configuration.metricsListen { try MetricsListener.start(address, daemon: daemon, logger: logger) }
            // The backend is bound and the control socket listens: hand the kernel descriptors to
            // the store first (a crash right after READY keeps them), then READY=1.
            service.storeDescriptors(of: daemon.backend)
            service.ready(status: daemon.statusLine())
            service.startHeartbeat(healthProblem: { daemon.healthProblem() }, status: { daemon.statusLine() })
            // Serve until SIGTERM/SIGINT; mounts stay (the kernel keeps them), a restarted ferryd serves them again.
            let signals = [SIGTERM, SIGINT].map { sig -> any DispatchSourceSignal in
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .main)
                source.setEventHandler {
                    logger.info("stopping on signal \(sig)")
                    service.stopping(status: "finishing requests in flight; mounts stay for the next ferryd")
                    daemon.stop()
                    Foundation.exit(0)
                }
                source.resume()
                return source
            }
            // The sources must outlive dispatchMain(), or SIGTERM stays ignored.
            withExtendedLifetime(signals) { dispatchMain() }
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode.failure
        }
    }
}

/// Entry point of the `ferryd` executable (`ferryd hold-group` runs the fanotify group holder).
public func runFerryDaemon() {
    let arguments = CommandLine.arguments
    if arguments.count == 4, arguments[1] == "hold-group", arguments[2] == "--socket" {
        signal(SIGHUP, SIG_IGN)
        do { try FanotifyGroupHolder.serve(socketPath: arguments[3]) } catch {
            FileHandle.standardError.write(Data("ferryd hold-group: \(error)\n".utf8))
            exit(1)
        }
    }
    FerryDaemonCommand.main()
}

/// Builds a daemon from a configuration: chunk store, backend, image resolver.
enum DaemonAssembly {
    /// - Parameters:
    ///   - inherited: descriptors passed by the service manager (`LISTEN_FDNAMES` names).
    ///   - holdGroupInProcess: without a service manager, a holder process keeps the fanotify
    ///     group between ferryd processes; under systemd its descriptor store does (a holder
    ///     would die with the service's cgroup anyway).
    static func make(configuration: DaemonConfiguration, logger: Logger, inherited: [(name: String, fd: FileDescriptor)] = [],
                     holdGroupInProcess: Bool = true) throws -> FerryDaemon {
        let state = configuration.stateDirectory
        let store = configuration.chunkStore ? try ChunkStore(directory: state + "/store") : nil
        let gate = FetchGate(limit: configuration.fetchConcurrency)
        let metrics = DaemonMetrics()
        let backend: any KernelBackend
        switch try BackendChoice.resolve(configuration.backend, stateDirectory: state) {
        case .fanotify:
            backend = try makeFanotifyBackend(state: state, store: store, gate: gate, limits: configuration.fillLimits, metrics: metrics,
                                              inherited: inherited, holdGroupInProcess: holdGroupInProcess, logger: logger)
        case .fscache:
            backend = try makeFscacheBackend(state: state, store: store, gate: gate, limits: configuration.fillLimits,
                                             inherited: inherited, holdDeviceInProcess: holdGroupInProcess, logger: logger)
        }
        let proxy = configuration.proxy.map { url in
            BlobProxyOptions(url: url, headers: configuration.proxyHeaders ?? BlobProxyOptions.dragonflyHeaders,
                             healthURL: configuration.proxyHealthURL)
        }
        let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: Set(configuration.plainHTTP), mirrors: configuration.mirrors,
                                                             blobProxy: proxy),
                                    logger: logger)
        var extraMetrics: [@Sendable () -> String] = []
        if proxy != nil { extraMetrics.append { proxyMetricsText(client.blobProxyStatistics) } }
        let peers = try makePeerNetwork(configuration, store: store, logger: logger)
        if let peers { extraMetrics.append { peers.metricsText() } }
        let resolver: ImageResolver = { reference, state in
            try ImageResolution.resolve(reference, stateDirectory: state, client: client, peers: peers)
        }
        let prefetcher = store.map { Prefetcher(store: $0, logger: logger) }
        let blobCaches = backend as? any EvictsCachedBlobs
        let cache = store == nil && blobCaches == nil ? nil
            : CacheManager(limit: configuration.cacheLimit, store: store, blobCaches: blobCaches, logger: logger)
        return FerryDaemon(configuration: configuration, backend: backend, resolver: resolver,
                           mounter: KernelMounter(readaheadKiB: configuration.kernelReadaheadKiB, logger: logger), cache: cache, metrics: metrics,
                           logger: logger, extraMetrics: extraMetrics, prefetcher: prefetcher)
    }

    /// Peer sharing, when configured: the peer set, the libcurl transport, and the server on
    /// `peer_listen` (started here, so peers can reach this node as soon as it runs).
    static func makePeerNetwork(_ configuration: DaemonConfiguration, store: ChunkStore?, logger: Logger) throws -> PeerNetwork? {
        guard configuration.peerSharing else { return nil }
        guard let store else {
            throw DaemonError.configuration("peer sharing needs the chunk store (peers are served from it): set \"chunk_store\": true")
        }
        let set = PeerSet(selfAddress: configuration.peerAdvertise ?? configuration.peerListen, peers: configuration.peers,
                          file: configuration.peersFile)
        let options = PeerOptions(requestTimeout: .milliseconds(max(100, configuration.peerTimeoutMs)),
                                  serveRateLimit: configuration.peerRateLimit)
        let network = PeerNetwork(peers: set, transport: CurlPeerTransport(), store: store, options: options, logger: logger)
        if let listen = configuration.peerListen {
            try network.startServer(listen: listen)
        } else {
            network.startHealthChecks()
        }
        return network
    }
}

/// The peer transport over the Registry module's libcurl client.
struct CurlPeerTransport: PeerTransport {
    let client = PeerHTTPClient()
    func get(_ url: String, timeout: Duration) async throws -> (status: Int, body: [UInt8]) {
        let response = try await client.get(url, timeout: timeout)
        return (response.status, response.body)
    }
}

/// `ferry_proxy_*` metrics of the blob proxy route.
func proxyMetricsText(_ statistics: BlobProxyStatistics?) -> String {
    guard let s = statistics else { return "" }
    return """
        # HELP ferry_proxy_reads_total Blob range reads answered through the proxy.
        # TYPE ferry_proxy_reads_total counter
        ferry_proxy_reads_total \(s.proxiedReads)
        # HELP ferry_proxy_fallbacks_total Blob range reads that went to the mirrors or origin directly instead.
        # TYPE ferry_proxy_fallbacks_total counter
        ferry_proxy_fallbacks_total \(s.directFallbacks)
        # HELP ferry_proxy_failures_total Failures of the proxy itself (unreachable, 5xx).
        # TYPE ferry_proxy_failures_total counter
        ferry_proxy_failures_total \(s.proxyFailures)
        # HELP ferry_proxy_healthy Whether the proxy is used (1) or avoided after failures (0).
        # TYPE ferry_proxy_healthy gauge
        ferry_proxy_healthy \(s.healthy ? 1 : 0)

        """
}

extension DaemonAssembly {
    static func makeFanotifyBackend(state: String, store: ChunkStore?, gate: FetchGate, limits: FillLimits, metrics: DaemonMetrics,
                                    inherited: [(name: String, fd: FileDescriptor)], holdGroupInProcess: Bool,
                                    logger: Logger) throws -> any KernelBackend {
        let holderSocket = state + "/fanotify-group.sock"
        let group: FanotifyGroup
        if let stored = inherited.first(where: { $0.name == HandedOverDescriptor.fanotifyGroup }) {
            group = FanotifyGroup(adopting: stored.fd)
            let orphans = FanotifyGroupHolder.answerOrphans(of: group)
            logger.notice("took over the fanotify group from the service manager's descriptor store",
                          metadata: ["orphaned events answered EIO": "\(orphans.count)"])
        } else if let inherited = FanotifyGroupHolder.fetch(socketPath: holderSocket) {
            group = inherited
            let orphans = FanotifyGroupHolder.answerOrphans(of: group)
            logger.notice("took over the fanotify group of a previous ferryd",
                          metadata: ["orphaned events answered EIO": "\(orphans.count)"])
        } else {
            do {
                group = try FanotifyGroup.preContent()
            } catch {
                throw DaemonError.backendUnavailable("fanotify backend unavailable (needs Linux ≥ 6.14 with CONFIG_FANOTIFY_ACCESS_PERMISSIONS): \(error)")
            }
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
            if holdGroupInProcess { try FanotifyGroupHolder.startHolder(for: group, socketPath: holderSocket) }
        }
        return try FanotifyBackend(group: group, cacheDirectory: state + "/cache", store: store, gate: gate, limits: limits,
                                   metrics: metrics, logger: logger)
    }

    /// `/dev/cachefiles`, bound to `<state>/fscache` with tag `ferry`, or the device a previous
    /// ferryd left with the holder process (then `restore` re-sends what it had not answered).
    static func makeFscacheBackend(state: String, store: ChunkStore?, gate: FetchGate, limits: FillLimits,
                                   inherited: [(name: String, fd: FileDescriptor)], holdDeviceInProcess: Bool,
                                   logger: Logger) throws -> any KernelBackend {
        let holderSocket = state + "/cachefiles-device.sock"
        let device: CachefilesDevice
        if let stored = inherited.first(where: { $0.name == HandedOverDescriptor.cachefiles }) {
            device = CachefilesDevice(adopting: stored.fd)
            logger.notice("took over /dev/cachefiles from the service manager's descriptor store")
        } else if let inherited = FanotifyGroupHolder.fetchDescriptor(socketPath: holderSocket) {
            device = CachefilesDevice(adopting: FileDescriptor(rawValue: inherited.rawValue, name: "/dev/cachefiles (taken over)"))
            logger.notice("took over /dev/cachefiles from a previous ferryd")
        } else {
            let cache = state + "/fscache"
            try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
            do {
                device = try CachefilesDevice.open()
                try device.bindOnDemand(directory: cache, tag: "ferry")
            } catch {
                throw DaemonError.backendUnavailable(
                    "fscache backend unavailable (needs /dev/cachefiles with CONFIG_CACHEFILES_ONDEMAND, and \(cache) on a filesystem with xattrs and direct I/O): \(error)")
            }
            if holdDeviceInProcess { try FanotifyGroupHolder.startHolder(holding: device.descriptor, socketPath: holderSocket) }
        }
        return try FscacheBackend(device: device, store: store, gate: gate, limits: limits, logger: logger)
    }
}

/// Which kernel backend ferryd uses.
enum BackendChoice {
    case fanotify, fscache

    /// `auto` picks fanotify where the kernel has pre-content hooks (Linux ≥ 6.14), else fscache
    /// where `/dev/cachefiles` exists.
    static func resolve(_ name: String, stateDirectory: String) throws -> BackendChoice {
        switch name {
        case "fanotify": return .fanotify
        case "fscache": return .fscache
        case "auto":
            try? FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
            if FanotifyGroup.preContentSupported(in: stateDirectory) { return .fanotify }
            if FileManager.default.fileExists(atPath: "/dev/cachefiles") { return .fscache }
            throw DaemonError.backendUnavailable(
                "no lazy kernel backend on this host: neither fanotify pre-content hooks (Linux ≥ 6.14) nor /dev/cachefiles (CONFIG_CACHEFILES_ONDEMAND); run Tools/check-kernel")
        default:
            throw DaemonError.backendUnavailable("unknown backend \"\(name)\" (auto, fanotify or fscache)")
        }
    }
}

/// `--metrics-listen HOST:PORT`: the control API's `/metrics` (and nothing else) over TCP.
enum MetricsListener {
    static func start(_ address: String, daemon: FerryDaemon, logger: Logger) throws {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw DaemonError.configuration("metrics_listen \"\(address)\" is not HOST:PORT (e.g. 127.0.0.1:9797)")
        }
        let host = String(address[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        let (socket, bound) = try TCPSocket.listen(host: host, port: port)
        ControlHTTP.serve(listener: socket) { request in
            guard request.method == "GET", request.path == "/metrics" else {
                return .error("only GET /metrics is served here", status: 404)
            }
            return ControlResponse(status: 200, contentType: "text/plain; version=0.0.4", body: Array(daemon.metricsText().utf8))
        }
        logger.info("metrics listening", metadata: ["address": "\(host):\(bound)"])
    }
}

/// How ferryd turns a reference into a registered image: the bootstrap is fetched once,
/// verified and kept under the state directory; blobs are read lazily from where the image lives.
enum ImageResolution {
    static func resolve(_ reference: String, stateDirectory: String, client: RegistryClient, peers: PeerNetwork? = nil) throws -> RegisteredImage {
        let parsed = try ImageReference(parsing: reference)
        let scratch = try makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let source: any ImageSource
        if case let .registry(ref) = parsed {
            source = RegistryImageSource(client: client, reference: ref, scratch: scratch)
        } else {
            source = try ImageSources.open(parsed)
        }
        let resolved = try source.resolve(platform: nil)
        guard let bootstrapLayer = resolved.manifest.layers.last(where: {
            $0.annotations?[FerryAnnotation.bootstrap] == "true" || $0.mediaType == MediaType.ferryBootstrap
        }) else { throw ConversionError.notAFerryImage(reference) }
        let id = resolved.manifestDigest.hex
        let directory = "\(stateDirectory)/images/\(id)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let bootstrapFile = directory + "/bootstrap"
        if !FileManager.default.fileExists(atPath: bootstrapFile) {
            // Verified while copied (VerifyingSource), published by rename.
            let input = try source.openBlob(bootstrapLayer)
            let temp = bootstrapFile + ".tmp"
            let out = try FileDescriptor.open(temp, .createTruncate)
            do {
                while let piece = try input.read(upTo: 1 << 20), !piece.isEmpty { try out.write(piece) }
                try out.sync()
                try out.close()
            } catch {
                try? out.close()
                throw error
            }
            guard rename(temp, bootstrapFile) == 0 else { throw SystemError.syscall("rename \(temp)", errno: Errno.current) }
        }
        let (metadata, erofsLength) = try BootstrapMetadata.read(bootstrapAt: bootstrapFile)
        // The kernel mounts the EROFS part; the chunk tables after it stay ours.
        let erofs = directory + "/bootstrap.erofs"
        if !FileManager.default.fileExists(atPath: erofs) {
            let input = try FileDescriptor.open(bootstrapFile, .readOnly)
            defer { try? input.close() }
            try writeFileAtomically(try input.read(at: 0, count: Int(erofsLength)), to: erofs)
        }
        let sources: [any ChunkSource]
        switch parsed {
        case let .registry(ref):
            let registry = RegistryChunkSource(source: RegistryBlobSource(client: client, repository: ref))
            if let peers {
                // Peers may ask this node for the image's chunks (by digest only); it fetches them
                // with its own credentials. Its own reads ask the chunks' home peers first.
                peers.register(metadata, source: registry)
                sources = [peers.source(fallback: registry), registry]
            } else {
                sources = [registry]
            }
        case let .ociLayout(path, _):
            sources = [FileChunkSource(name: "layout") { blob in "\(path)/blobs/sha256/\(blob.hexDigest)" }]
        case .dockerArchive:
            throw ValidationError("docker-archive images are not Ferry images; convert them first")
        }
        return RegisteredImage(id: id, reference: reference, bootstrapPath: erofs, metadata: metadata, sources: sources)
    }
}

/// Chunks from a registry (mirrors, then the origin), by ranged GETs of the blob.
struct RegistryChunkSource: ChunkSource {
    let source: RegistryBlobSource
    var name: String { "registry" }
    func read(blob: BlobInfo, range: Range<UInt64>) async throws -> [UInt8] {
        try await source.read(blob: Digest(sha256: blob.digest), range: range)
    }
}
