import ArgumentParser
import Foundation
import Logging
import Registry
import Synchronization

/// Flags shared by commands that talk to registries.
struct RegistryFlags: ParsableArguments {
    @Option(name: .customLong("plain-http"), help: "Registry host[:port] to reach over plain HTTP (repeatable).")
    var plainHTTP: [String] = []
    @Option(help: "Registry host[:port] whose TLS certificate is not verified (repeatable).") var insecure: [String] = []
    @Option(help: "Extra CA certificates (PEM) for registries.") var caCert: String?
    @Option(help: "Credentials file (Docker/containers auths format) instead of the usual search path.") var authfile: String?
    @Option(help: "A mirror tried before the registry it mirrors, REGISTRY=MIRROR (repeatable, in order).") var mirror: [String] = []
    @Option(help: "Registry log detail on stderr: error, warning, info, debug or trace.") var registryLog: String = "warning"

    func options() throws -> RegistryOptions {
        var mirrors: [String: [String]] = [:]
        for entry in mirror {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw ValidationError("--mirror \(entry): write REGISTRY=MIRROR, e.g. docker.io=mirror.local:5000")
            }
            mirrors[parts[0], default: []].append(parts[1])
        }
        return RegistryOptions(plainHTTPHosts: Set(plainHTTP), insecureHosts: Set(insecure), caCertificatePath: caCert,
                               mirrors: mirrors, authFile: authfile)
    }

    /// A client with these options, logging to stderr at `--registry-log` (never credentials:
    /// the client logs methods, URLs without their query, statuses and causes).
    func client(observer: (any TransferObserver)? = nil) throws -> RegistryClient {
        guard let level = Logger.Level(rawValue: registryLog) else {
            throw ValidationError("--registry-log \(registryLog): use error, warning, info, debug or trace")
        }
        var logger = Logger(label: "ferry.registry") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = level
        return RegistryClient(options: try options(), logger: logger, observer: observer)
    }
}

/// A private scratch directory for downloads and conversion output on its way to a registry.
func makeScratchDirectory() throws -> String {
    let base = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/var/tmp"
    let path = "\(base)/ferry-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    return path
}

/// Runs an async registry call from a command's synchronous `run()` (the main thread, never
/// a Swift concurrency thread) and waits for it.
func waitFor<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { box.set(.success(try await operation())) } catch { box.set(.failure(error)) }
        done.signal()
    }
    done.wait()
    return try box.get()
}

private final class ResultBox<T: Sendable>: Sendable {
    private let value = Mutex<Result<T, any Error>?>(nil)
    func set(_ result: Result<T, any Error>) { value.withLock { $0 = result } }
    func get() throws -> T {
        guard let result = value.withLock({ $0 }) else { throw ValidationError("internal: operation finished without a result") }
        return try result.get()
    }
}
