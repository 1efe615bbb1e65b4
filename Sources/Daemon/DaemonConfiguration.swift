public import Foundation

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
    public var batchBytes: UInt64 = 4 << 20
    /// Keep verified chunks in the persistent chunk store (shared across images and restarts).
    public var chunkStore: Bool = true
    /// Log level: trace, debug, info, notice, warning, error, critical.
    public var logLevel: String = "info"
    /// Registry hosts (`host[:port]`) reached over plain HTTP.
    public var plainHTTP: [String] = []
    /// Mirrors per registry host, tried in order before the host (`{"docker.io": ["mirror:5000"]}`).
    public var mirrors: [String: [String]] = [:]
    /// Bytes the chunk store and the cache files of unmounted images may use (nil: no limit).
    /// In the file a number or a string with a K/M/G/T suffix: `"20G"`.
    public var cacheLimit: UInt64?
    /// `host:port` where the Prometheus metrics are also served over TCP (nil: only on the control socket).
    public var metricsListen: String?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case stateDirectory = "state_dir", socketPath = "socket", backend, fetchConcurrency = "fetch_concurrency"
        case batchBytes = "batch_bytes", chunkStore = "chunk_store", logLevel = "log_level", plainHTTP = "plain_http", mirrors
        case cacheLimit = "cache_limit", metricsListen = "metrics_listen"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var d = DaemonConfiguration()
        d.stateDirectory = try c.decodeIfPresent(String.self, forKey: .stateDirectory) ?? d.stateDirectory
        d.socketPath = try c.decodeIfPresent(String.self, forKey: .socketPath) ?? d.socketPath
        d.backend = try c.decodeIfPresent(String.self, forKey: .backend) ?? d.backend
        d.fetchConcurrency = try c.decodeIfPresent(Int.self, forKey: .fetchConcurrency) ?? d.fetchConcurrency
        d.batchBytes = try c.decodeIfPresent(UInt64.self, forKey: .batchBytes) ?? d.batchBytes
        d.chunkStore = try c.decodeIfPresent(Bool.self, forKey: .chunkStore) ?? d.chunkStore
        d.logLevel = try c.decodeIfPresent(String.self, forKey: .logLevel) ?? d.logLevel
        d.plainHTTP = try c.decodeIfPresent([String].self, forKey: .plainHTTP) ?? d.plainHTTP
        d.mirrors = try c.decodeIfPresent([String: [String]].self, forKey: .mirrors) ?? d.mirrors
        if let number = try? c.decodeIfPresent(UInt64.self, forKey: .cacheLimit) {
            d.cacheLimit = number
        } else if let text = try c.decodeIfPresent(String.self, forKey: .cacheLimit) {
            guard let bytes = parseByteCount(text) else {
                throw DecodingError.dataCorruptedError(forKey: .cacheLimit, in: c, debugDescription: "\"\(text)\" is not a size such as 512M or 20G")
            }
            d.cacheLimit = bytes
        }
        d.metricsListen = try c.decodeIfPresent(String.self, forKey: .metricsListen)
        self = d
    }

    /// Reads a configuration file; unknown keys are an error so typos do not pass silently.
    public static func load(path: String) throws -> DaemonConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DaemonError.configuration("cannot read \(path)")
        }
        if let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            let known = Set(["state_dir", "socket", "backend", "fetch_concurrency", "batch_bytes", "chunk_store", "log_level", "plain_http", "mirrors", "cache_limit", "metrics_listen"])
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
