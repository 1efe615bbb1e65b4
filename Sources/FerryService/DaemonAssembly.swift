import Blob
public import Daemon
import PeerSharing
public import FerrySystem
import Foundation
import KernelBackends
public import Logging
import OCI
import Registry

/// Builds a daemon from a configuration: chunk store, backend, image resolver.
public enum DaemonAssembly {
    /// - Parameters:
    ///   - inherited: descriptors passed by the service manager (`LISTEN_FDNAMES` names).
    ///   - underServiceManager: whether a service manager (systemd) runs ferryd. Either way a
    ///     holder process keeps the backend's kernel descriptor (the fanotify group, or
    ///     `/dev/cachefiles`) while no ferryd runs: without one, a child that leaves ferryd's
    ///     session; under systemd, whose descriptor store covers restarts and crashes but is
    ///     emptied by `systemctl stop` before systemd 254, a transient unit of its own.
    public static func make(configuration: DaemonConfiguration, logger: Logger, inherited: [(name: String, fd: FileDescriptor)] = [],
                     underServiceManager: Bool = false) async throws -> FerryDaemon {
        let state = configuration.stateDirectory
        try prepareStateDirectory(state)
        let store = configuration.chunkStore ? try ChunkStore(directory: state + "/store") : nil
        let gate = FetchGate(limit: configuration.fetchConcurrency)
        let backend: any KernelBackend
        let metrics: DaemonMetrics
        switch try BackendChoice.resolve(configuration.backend, stateDirectory: state) {
        case .fanotify:
            metrics = DaemonMetrics(backend: "fanotify")
            backend = try makeFanotifyBackend(state: state, store: store, gate: gate, limits: configuration.fillLimits, metrics: metrics,
                                              inherited: inherited, holder: holderLaunch(kind: "fanotify", state: state, underServiceManager: underServiceManager),
                                              journaling: configuration.fanotifyInflightJournal, logger: logger)
        case .fscache:
            metrics = DaemonMetrics(backend: "fscache")
            backend = try makeFscacheBackend(state: state, store: store, gate: gate, limits: configuration.fillLimits,
                                             inherited: inherited, holder: holderLaunch(kind: "cachefiles", state: state, underServiceManager: underServiceManager),
                                             logger: logger)
        }
        let proxy = configuration.proxy.map { url in
            BlobProxyOptions(url: url, headers: configuration.proxyHeaders ?? BlobProxyOptions.dragonflyHeaders,
                             healthURL: configuration.proxyHealthURL)
        }
        let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: Set(configuration.plainHTTP), mirrors: configuration.mirrors,
                                                             blobProxy: proxy),
                                    logger: logger)
        var extraMetrics: [@Sendable (inout MetricsWriter) -> Void] = []
        if proxy != nil { extraMetrics.append { writeProxyMetrics(client.blobProxyStatistics, into: &$0) } }
        let peers = try await makePeerNetwork(configuration, store: store, logger: logger)
        if let peers { extraMetrics.append { peers.writeMetrics(into: &$0) } }
        let resolution = ImageResolution(client: client, peers: peers)
        let resolver: ImageResolver = { reference, state in try await resolution.resolve(reference, stateDirectory: state) }
        let prefetcher = store.map { Prefetcher(store: $0, logger: logger) }
        let blobCaches = backend as? any EvictsCachedBlobs
        let cache = store == nil && blobCaches == nil ? nil
            : CacheManager(limit: configuration.cacheLimit, store: store, blobCaches: blobCaches, logger: logger)
        return FerryDaemon(configuration: configuration, backend: backend, resolver: resolver,
                           mounter: KernelMounter(readaheadKiB: configuration.kernelReadaheadKiB,
                                                  allowSUIDAndDevices: configuration.allowSUIDAndDevices, logger: logger), cache: cache, metrics: metrics,
                           logger: logger, extraMetrics: extraMetrics, prefetcher: prefetcher)
    }

    /// Peer sharing, when configured: the peer set, the libcurl transport, and the server on
    /// `peer_listen` (started here, so peers can reach this node as soon as it runs).
    static func makePeerNetwork(_ configuration: DaemonConfiguration, store: ChunkStore?, logger: Logger) async throws -> PeerNetwork? {
        guard configuration.peerSharing else { return nil }
        guard let store else {
            throw DaemonError.configuration("peer sharing needs the chunk store (peers are served from it): set \"chunk_store\": true")
        }
        let set = PeerSet(selfAddress: configuration.peerAdvertise ?? configuration.peerListen, peers: configuration.peers,
                          file: configuration.peersFile)
        let options = PeerOptions(requestTimeout: .milliseconds(max(100, configuration.peerTimeoutMs)),
                                  serveRateLimit: configuration.peerRateLimit)
        // Requests leave from this node's listed address: peers serve only the addresses they list.
        let source = (configuration.peerAdvertise ?? configuration.peerListen).flatMap(PeerNetwork.split).map(\.0)
            .flatMap { ["0.0.0.0", "::"].contains($0) ? nil : $0 }
        let network = PeerNetwork(peers: set, transport: CurlPeerTransport(client: PeerHTTPClient(sourceAddress: source)), store: store,
                                  options: options, logger: logger)
        if let listen = configuration.peerListen {
            try await network.startServer(listen: listen)
        } else {
            network.startHealthChecks()
        }
        return network
    }
}

/// The peer transport over the Registry module's libcurl client.
struct CurlPeerTransport: PeerTransport {
    let client: PeerHTTPClient
    func get(_ url: String, timeout: Duration) async throws -> (status: Int, body: [UInt8]) {
        let response = try await client.get(url, timeout: timeout)
        return (response.status, response.body)
    }
}

/// The `ferry_proxy_*` series of the blob proxy route.
func writeProxyMetrics(_ statistics: BlobProxyStatistics?, into out: inout MetricsWriter) {
    guard let s = statistics else { return }
    out.counter("ferry_proxy_reads_total", "Blob range reads answered through the proxy.", s.proxiedReads)
    out.counter("ferry_proxy_fallbacks_total", "Blob range reads that went to the mirrors or origin directly instead.", s.directFallbacks)
    out.counter("ferry_proxy_failures_total", "Failures of the proxy itself (unreachable, 5xx).", s.proxyFailures)
    out.gauge("ferry_proxy_healthy", "Whether the proxy is used (1) or avoided after failures (0).", s.healthy ? 1 : 0)
}

extension DaemonAssembly {
    static func makeFanotifyBackend(state: String, store: ChunkStore?, gate: FetchGate, limits: FillLimits, metrics: DaemonMetrics,
                                    inherited: [(name: String, fd: FileDescriptor)], holder: FanotifyGroupHolder.Launch, journaling: Bool,
                                    logger: Logger) throws -> any KernelBackend {
        let holderSocket = state + "/fanotify-group.sock"
        let journalPath = state + "/fanotify-inflight"
        let group: FanotifyGroup
        var recovered: [InflightJournal.Entry] = []
        let taken: (group: FanotifyGroup, message: Logger.Message)?
        if let stored = inherited.first(where: { $0.name == HandedOverDescriptor.fanotifyGroup }) {
            taken = (FanotifyGroup(adopting: stored.fd), "took over the fanotify group from the service manager's descriptor store")
        } else {
            taken = FanotifyGroupHolder.fetch(socketPath: holderSocket).map { ($0, "took over the fanotify group of a previous ferryd") }
        }
        if let taken {
            group = taken.group
            // What the predecessor had read and not answered: journaled events are served again,
            // the rest failed with EIO before this ferryd reads any event itself.
            recovered = journaling ? InflightJournal.recover(path: journalPath) : []
            let orphans = FanotifyGroupHolder.answerOrphans(of: group, except: Set(recovered.map(\.fd)))
            logger.notice(taken.message,
                          metadata: ["orphaned events answered EIO": "\(orphans.count)", "journaled events to serve": "\(recovered.count)"])
        } else {
            do {
                group = try FanotifyGroup.preContent()
            } catch {
                throw DaemonError.backendUnavailable("fanotify backend unavailable (needs Linux ≥ 6.14 with CONFIG_FANOTIFY_ACCESS_PERMISSIONS): \(error)")
            }
            try startHolder(holding: group.descriptor, socketPath: holderSocket, launch: holder, logger: logger)
        }
        let journal = journaling ? try InflightJournal(path: journalPath) : nil
        return try FanotifyBackend(group: group, cacheDirectory: state + "/cache", store: store, gate: gate, limits: limits,
                                   metrics: metrics, startedAfresh: taken == nil, journal: journal, recovered: recovered, logger: logger)
    }

    /// `/dev/cachefiles`, bound to `<state>/fscache` with tag `ferry`, or the device a previous
    /// ferryd left with the holder process (then `restore` re-sends what it had not answered).
    static func makeFscacheBackend(state: String, store: ChunkStore?, gate: FetchGate, limits: FillLimits,
                                   inherited: [(name: String, fd: FileDescriptor)], holder: FanotifyGroupHolder.Launch,
                                   logger: Logger) throws -> any KernelBackend {
        let holderSocket = state + "/cachefiles-device.sock"
        let device: CachefilesDevice
        var startedAfresh = false
        if let stored = inherited.first(where: { $0.name == HandedOverDescriptor.cachefiles }) {
            device = CachefilesDevice(adopting: stored.fd)
            logger.notice("took over /dev/cachefiles from the service manager's descriptor store")
        } else if let inherited = FanotifyGroupHolder.fetchDescriptor(socketPath: holderSocket) {
            device = CachefilesDevice(adopting: FileDescriptor(rawValue: inherited.rawValue, name: "/dev/cachefiles (taken over)"))
            logger.notice("took over /dev/cachefiles from a previous ferryd")
        } else {
            let cache = state + "/fscache"
            try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            do {
                device = try CachefilesDevice.open()
                try device.bindOnDemand(directory: cache, tag: "ferry")
            } catch {
                throw DaemonError.backendUnavailable(
                    "fscache backend unavailable (needs /dev/cachefiles with CONFIG_CACHEFILES_ONDEMAND, and \(cache) on a filesystem with xattrs and direct I/O): \(error)")
            }
            try startHolder(holding: device.descriptor, socketPath: holderSocket, launch: holder, logger: logger)
            startedAfresh = true
        }
        return try FscacheBackend(device: device, store: store, gate: gate, limits: limits, startedAfresh: startedAfresh,
                                  domainRecords: state + "/fscache-domains", logger: logger)
    }
}

extension DaemonAssembly {
    /// How the holder of a fresh kernel descriptor starts: a transient unit under a service
    /// manager (`ferryd-fanotify-holder`, `ferryd-cachefiles-holder`; with a hash of the state
    /// directory when it is not the default one, so two ferryds never share a unit), else a child.
    static func holderLaunch(kind: String, state: String, underServiceManager: Bool) -> FanotifyGroupHolder.Launch {
        guard underServiceManager else { return .childProcess }
        guard state != "/var/lib/ferry" else { return .transientUnit(name: "ferryd-\(kind)-holder") }
        var hash: UInt32 = 2_166_136_261  // FNV-1a
        for byte in state.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return .transientUnit(name: "ferryd-\(kind)-holder-" + String(hash, radix: 16))
    }

    /// Starts the holder. Without a service manager ferryd relies on it and fails without it;
    /// under one, the descriptor store still covers restarts and crashes, so a holder unit that
    /// cannot start is a warning (`systemctl stop ferryd` then ends the kernel state).
    static func startHolder(holding descriptor: FileDescriptor, socketPath: String, launch: FanotifyGroupHolder.Launch,
                            logger: Logger) throws {
        do {
            try FanotifyGroupHolder.startHolder(holding: descriptor, socketPath: socketPath, launch: launch)
            if case let .transientUnit(name) = launch {
                logger.info("kernel descriptor also held by a unit of its own, which `systemctl stop ferryd` leaves running",
                            metadata: ["unit": "\(name).service"])
            }
        } catch {
            guard case let .transientUnit(name) = launch else { throw error }
            logger.warning("""
                cannot start the holder unit: restarts and crashes keep the kernel state (descriptor store), but \
                `systemctl stop ferryd` will end it (fanotify: unfetched ranges then read as zeros; fscache: the mounts fail with EIO)
                """, metadata: ["unit": "\(name).service", "error": "\(error)"])
        }
    }

    /// Creates the state directory 0700 (or makes an existing one 0700): it holds registry
    /// credentials' effects (bootstraps, chunks, cache files) and the sockets' neighbours, and
    /// only root has business there, whatever the umask of whoever started ferryd.
    static func prepareStateDirectory(_ state: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: state)
        } catch {
            throw DaemonError.configuration("cannot create the state directory \(state): \((error as NSError).localizedFailureReason ?? error.localizedDescription)")
        }
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
public enum MetricsListener {
    public static func start(_ address: String, daemon: FerryDaemon, logger: Logger) async throws {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw DaemonError.configuration("metrics_listen \"\(address)\" is not HOST:PORT (e.g. 127.0.0.1:9797)")
        }
        let host = String(address[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        let (socket, bound) = try TCPSocket.listen(host: host, port: port)
        try await ControlHTTP.serve(listener: socket, limits: .networkPort) { request in
            guard request.method == "GET", request.path == "/metrics" else {
                return .error("only GET /metrics is served here", status: 404)
            }
            return ControlResponse(status: 200, contentType: "text/plain; version=0.0.4", body: Array(daemon.metricsText().utf8))
        }
        logger.info("metrics listening", metadata: ["address": "\(host):\(bound)"])
    }
}
