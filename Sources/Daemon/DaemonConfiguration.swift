import Foundation

/// ferryd's configuration: a JSON file (`--config`, default `/etc/ferry/ferryd.json` when it
/// exists) whose keys are all optional, then command-line flags on top.
public struct DaemonConfiguration: Codable, Sendable, Equatable {
    /// Where ferryd keeps bootstraps, cache files and the chunk store.
    public var stateDirectory: String = "/var/lib/ferry"
    /// The control API's Unix socket (mode 0600).
    public var socketPath: String = "/run/ferry/ferryd.sock"
    /// "auto", "fanotify" or "fscache".
    public var backend: String = "auto"
    /// Fetches that may run at once across all images.
    public var fetchConcurrency: Int = 8
    /// Adjacent missing chunks are fetched in one ranged request up to this many bytes.
    public var batchBytes: UInt64 = FillLimits().batchBytes
    /// Sequential readahead window per blob (0: off); see `FillLimits`.
    public var readaheadBytes: UInt64 = FillLimits().readaheadBytes
    /// The kernel's readahead on each Ferry mount, in KiB (the mount's bdi `read_ahead_kb`; nil
    /// leaves the kernel's default, 128). It is how much a page fault or a short read makes the
    /// kernel ask for, and so how much a lazy mount fetches beyond what programs touch: 32 with
    /// 16 KiB chunks fetches a third less at start-up, and costs cold sequential reads about a
    /// fifth of their speed (Tools/bench-daemon). 0 reads page by page. A mount request may set
    /// its own (`ferry mount --kernel-readahead-kb`).
    public var kernelReadaheadKiB: Int?
    /// The values `kernelReadaheadKiB` (and a mount's own setting) may take.
    static let validKernelReadaheadKiB = 0...(1 << 20)
    /// Why `kib` is not a valid kernel readahead, or nil when it is.
    public static func kernelReadaheadProblem(_ kib: Int) -> String? {
        validKernelReadaheadKiB.contains(kib)
            ? nil : "must be \(validKernelReadaheadKiB.lowerBound) to \(validKernelReadaheadKiB.upperBound) (KiB)"
    }
    /// Keep verified chunks in the persistent chunk store (shared across images and restarts).
    public var chunkStore: Bool = true
    /// Log level: trace, debug, info, notice, warning, error, critical.
    public var logLevel: String = "info"
    /// Registry hosts (`host[:port]`) reached over plain HTTP.
    public var plainHTTP: [String] = []
    /// Mirrors per registry host, tried in order before the host (`{"docker.io": ["mirror:5000"]}`).
    public var mirrors: [String: [String]] = [:]
    /// Serve chunks to peers on this TCP address ("10.0.0.2:7900"); nil serves nothing.
    public var peerListen: String?
    /// This node's address as its peers know it (default: `peerListen`).
    public var peerAdvertise: String?
    /// Peers to share chunks with (`host:port`, their `peer_listen`).
    public var peers: [String] = []
    /// A file listing peers, one `host:port` a line, re-read when it changes.
    public var peersFile: String?
    /// Milliseconds a chunk request to a peer may take (its home fetch from the registry included).
    public var peerTimeoutMs: Int = 10_000
    /// Bytes per second served to all peers together; 0: no limit.
    public var peerRateLimit: UInt64 = 0
    /// A forward HTTP proxy (Dragonfly's dfdaemon, "http://127.0.0.1:4001") for blob range reads.
    public var proxy: String?
    /// Header lines sent on proxied blob reads (default: Dragonfly's tag and filter headers).
    public var proxyHeaders: [String]?
    /// A URL answering 2xx while the proxy is healthy (checked directly after a failure).
    public var proxyHealthURL: String?

    /// Whether this node shares chunks with peers (it serves, or it has peers to ask).
    public var peerSharing: Bool { peerListen != nil || !peers.isEmpty || peersFile != nil }
    /// Bytes the chunk store and the cache files of unmounted images may use (nil: no limit).
    /// In the file a number or a string with a K/M/G/T suffix: `"20G"`.
    public var cacheLimit: UInt64?
    /// `host:port` where the Prometheus metrics are also served over TCP (nil: only on the control socket).
    public var metricsListen: String?
    /// The Unix socket (mode 0600) where ferryd serves containerd's snapshots API, as the
    /// `[proxy_plugins.ferry]` snapshotter; "" serves none. Default: `containerd-snapshotter.sock`
    /// beside the control socket (`/run/ferry/containerd-snapshotter.sock` with the defaults).
    public var containerdSnapshotterSocket: String?
    /// Mounts images without `MS_NOSUID | MS_NODEV`: setuid binaries and device nodes in images
    /// then take effect on the host. Off by default; containers still get setuid binaries through
    /// their own overlay mounts, whose flags are containerd's.
    public var allowSUIDAndDevices: Bool = false
    /// fanotify: record the events being served in `<state>/fanotify-inflight`, so that a
    /// successor of a killed ferryd serves them instead of failing them with EIO.
    public var fanotifyInflightJournal: Bool = true

    /// The snapshotter socket in effect ("" when off).
    public var snapshotterSocketPath: String {
        containerdSnapshotterSocket ?? ((socketPath as NSString).deletingLastPathComponent + "/containerd-snapshotter.sock")
    }

    public init() {}

    /// The fill limits these settings make.
    public var fillLimits: FillLimits { FillLimits(batchBytes: batchBytes, readaheadBytes: readaheadBytes) }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case stateDirectory = "state_dir", socketPath = "socket", backend, fetchConcurrency = "fetch_concurrency"
        case batchBytes = "batch_bytes", readaheadBytes = "readahead_bytes", kernelReadaheadKiB = "kernel_readahead_kb", chunkStore = "chunk_store", logLevel = "log_level", plainHTTP = "plain_http", mirrors
        case peerListen = "peer_listen", peerAdvertise = "peer_advertise", peers, peersFile = "peers_file"
        case peerTimeoutMs = "peer_timeout_ms", peerRateLimit = "peer_rate_limit"
        case proxy, proxyHeaders = "proxy_headers", proxyHealthURL = "proxy_health_url"
        case cacheLimit = "cache_limit", metricsListen = "metrics_listen"
        case containerdSnapshotterSocket = "containerd_snapshotter_socket", allowSUIDAndDevices = "allow_suid_and_devices",
             fanotifyInflightJournal = "fanotify_inflight_journal"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var d = DaemonConfiguration()
        d.stateDirectory = try c.decodeIfPresent(String.self, forKey: .stateDirectory) ?? d.stateDirectory
        d.socketPath = try c.decodeIfPresent(String.self, forKey: .socketPath) ?? d.socketPath
        d.backend = try c.decodeIfPresent(String.self, forKey: .backend) ?? d.backend
        d.fetchConcurrency = try c.decodeIfPresent(Int.self, forKey: .fetchConcurrency) ?? d.fetchConcurrency
        d.batchBytes = try c.decodeIfPresent(UInt64.self, forKey: .batchBytes) ?? d.batchBytes
        d.readaheadBytes = try c.decodeIfPresent(UInt64.self, forKey: .readaheadBytes) ?? d.readaheadBytes
        d.kernelReadaheadKiB = try c.decodeIfPresent(Int.self, forKey: .kernelReadaheadKiB)
        if let kib = d.kernelReadaheadKiB, let problem = Self.kernelReadaheadProblem(kib) {
            throw DecodingError.dataCorruptedError(forKey: .kernelReadaheadKiB, in: c, debugDescription: problem)
        }
        d.chunkStore = try c.decodeIfPresent(Bool.self, forKey: .chunkStore) ?? d.chunkStore
        d.logLevel = try c.decodeIfPresent(String.self, forKey: .logLevel) ?? d.logLevel
        d.plainHTTP = try c.decodeIfPresent([String].self, forKey: .plainHTTP) ?? d.plainHTTP
        d.mirrors = try c.decodeIfPresent([String: [String]].self, forKey: .mirrors) ?? d.mirrors
        d.peerListen = try c.decodeIfPresent(String.self, forKey: .peerListen)
        d.peerAdvertise = try c.decodeIfPresent(String.self, forKey: .peerAdvertise)
        d.peers = try c.decodeIfPresent([String].self, forKey: .peers) ?? d.peers
        d.peersFile = try c.decodeIfPresent(String.self, forKey: .peersFile)
        d.peerTimeoutMs = try c.decodeIfPresent(Int.self, forKey: .peerTimeoutMs) ?? d.peerTimeoutMs
        d.peerRateLimit = try c.decodeIfPresent(UInt64.self, forKey: .peerRateLimit) ?? d.peerRateLimit
        d.proxy = try c.decodeIfPresent(String.self, forKey: .proxy)
        d.proxyHeaders = try c.decodeIfPresent([String].self, forKey: .proxyHeaders)
        d.proxyHealthURL = try c.decodeIfPresent(String.self, forKey: .proxyHealthURL)
        if let number = try? c.decodeIfPresent(UInt64.self, forKey: .cacheLimit) {
            d.cacheLimit = number
        } else if let text = try c.decodeIfPresent(String.self, forKey: .cacheLimit) {
            guard let bytes = parseByteCount(text) else {
                throw DecodingError.dataCorruptedError(forKey: .cacheLimit, in: c, debugDescription: "\"\(text)\" is not a size such as 512M or 20G")
            }
            d.cacheLimit = bytes
        }
        d.metricsListen = try c.decodeIfPresent(String.self, forKey: .metricsListen)
        d.containerdSnapshotterSocket = try c.decodeIfPresent(String.self, forKey: .containerdSnapshotterSocket)
        d.allowSUIDAndDevices = try c.decodeIfPresent(Bool.self, forKey: .allowSUIDAndDevices) ?? d.allowSUIDAndDevices
        d.fanotifyInflightJournal = try c.decodeIfPresent(Bool.self, forKey: .fanotifyInflightJournal) ?? d.fanotifyInflightJournal
        self = d
    }

    /// Reads a configuration file; unknown keys are an error so typos do not pass silently.
    public static func load(path: String) throws -> DaemonConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DaemonError.configuration("cannot read \(path)")
        }
        if let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            let known = Set(CodingKeys.allCases.map(\.rawValue))
            if let unknown = object.keys.first(where: { !known.contains($0) }) {
                throw DaemonError.configuration("\(path): unknown key \"\(unknown)\" (known: \(known.sorted().joined(separator: ", ")))")
            }
        }
        do {
            return try JSONDecoder().decode(DaemonConfiguration.self, from: data)
        } catch {
            throw DaemonError.configuration("\(path): \(error)")
        }
    }
}

/// Errors of the daemon itself (configuration, registration, mounting).
public enum DaemonError: Error, Sendable, CustomStringConvertible {
    case configuration(String)
    case unknownImage(String)
    case mountFailed(target: String, reason: String)
    case backendUnavailable(String)

    public var description: String {
        switch self {
        case let .configuration(message): return "configuration: \(message)"
        case let .unknownImage(id): return "no image \(id) is registered"
        case let .mountFailed(target, reason): return "cannot mount at \(target): \(reason)"
        case let .backendUnavailable(message): return message
        }
    }
}
