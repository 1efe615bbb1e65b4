import Foundation
import FerrySystem
import OCI
import Registry

/// Test fixtures: processes started by the tests on 127.0.0.1 and stopped by them.
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static let tokenServer = directory + "/token_server.py"
    static let faultProxy = directory + "/fault_proxy.py"

    static func which(_ tool: String) -> String? {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(tool)") {
            return "\(dir)/\(tool)"
        }
        return nil
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var description: String
}

/// A scratch directory removed when the test ends.
final class TempDir: @unchecked Sendable {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "ferry-registry-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs a command to completion and returns its standard output; throws on a non-zero exit.
@discardableResult
func run(_ arguments: [String], environment: [String: String]? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw FixtureError(description: "\(arguments.joined(separator: " ")) exited \(process.terminationStatus): "
                           + String(decoding: errors, as: UTF8.self))
    }
    return String(decoding: output, as: UTF8.self)
}

/// A TCP port that was free a moment ago (the kernel picks it).
func freePort() throws -> Int {
    let text = try run(["python3", "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"])
    guard let port = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw FixtureError(description: "no port") }
    return port
}

/// A background process that is terminated (and reaped) by `stop()` or at deinit.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let logPath: String

    init(_ arguments: [String], log: String) throws {
        logPath = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let handle = FileHandle(forWritingAtPath: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    /// SIGTERM, then SIGKILL after two seconds. A child spawned from a Swift concurrency or
    /// dispatch thread inherits that thread's signal mask, in which SIGTERM is blocked: Python
    /// then never sees it (the fixtures unblock it themselves, but a stuck child must not hang
    /// the test either).
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(2)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit { stop() }

    /// Waits for a helper to write its port to `path`.
    func waitForPortFile(_ path: String) throws -> Int {
        for _ in 0..<200 {
            if let text = try? String(contentsOfFile: path, encoding: .utf8), let port = Int(text) { return port }
            guard process.isRunning else { throw FixtureError(description: "helper exited: \(log)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw FixtureError(description: "helper did not start: \(log)")
    }
}

/// Debian's docker-registry (distribution 2.8) with filesystem storage in a temp dir.
final class RegistryServer: @unchecked Sendable {
    enum Auth {
        case anonymous
        case htpasswd(user: String, password: String)
        case token(realm: String, service: String, issuer: String, certificate: String)
    }

    let dir: TempDir
    let port: Int
    let process: ServerProcess
    var host: String { "127.0.0.1:\(port)" }

    init(auth: Auth = .anonymous) async throws {
        guard let binary = Fixtures.which("docker-registry") else { throw FixtureError(description: "docker-registry not installed") }
        dir = try TempDir()
        port = try freePort()
        var authSection = ""
        switch auth {
        case .anonymous:
            break
        case let .htpasswd(user, password):
            let line = try run(["htpasswd", "-Bbn", user, password]).trimmingCharacters(in: .whitespacesAndNewlines)
            try (line + "\n").write(toFile: dir.file("htpasswd"), atomically: true, encoding: .utf8)
            authSection = "auth:\n  htpasswd:\n    realm: ferry-basic\n    path: \(dir.file("htpasswd"))\n"
        case let .token(realm, service, issuer, certificate):
            authSection = "auth:\n  token:\n    realm: \(realm)\n    service: \(service)\n    issuer: \(issuer)\n    rootcertbundle: \(certificate)\n"
        }
        let config = """
        version: 0.1
        log:
          level: warn
          accesslog:
            disabled: true
        storage:
          filesystem:
            rootdirectory: \(dir.file("storage"))
          delete:
            enabled: true
        http:
          addr: 127.0.0.1:\(port)
          secret: ferry-test-secret
        \(authSection)
        """
        try config.write(toFile: dir.file("config.yml"), atomically: true, encoding: .utf8)
        process = try ServerProcess([binary, "serve", dir.file("config.yml")], log: dir.file("registry.log"))
        // Ready when /v2/ answers at all (200 or 401).
        let probe = RegistryClient(options: RegistryOptions(plainHTTPHosts: [host], retry: .none))
        for _ in 0..<100 {
            do {
                try await probe.ping(host: host)
                return
            } catch RegistryError.unauthorized {
                return
            } catch {
                guard process.process.isRunning else { throw FixtureError(description: "registry exited: \(process.log)") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw FixtureError(description: "registry did not start: \(process.log)")
    }

    func stop() { process.stop() }
}

/// The Python token service (Fixtures/token_server.py).
final class TokenServer: @unchecked Sendable {
    let dir: TempDir
    let process: ServerProcess
    let port: Int
    var realm: String { "http://127.0.0.1:\(port)/token" }
    var certificate: String { dir.file("token-cert.pem") }
    static let service = "ferry-test"
    static let issuer = "ferry-test-issuer"
    static let user = "alice"
    static let password = "wonderland"

    init(keyType: String = "rsa", lifetime: Int = 300, advertise: Int? = nil, noPost: Bool = false) throws {
        dir = try TempDir()
        var arguments = ["python3", Fixtures.tokenServer, "--port-file", dir.file("port"), "--cert-out", dir.file("token-cert.pem"),
                         "--key-type", keyType, "--lifetime", String(lifetime), "--service", Self.service, "--issuer", Self.issuer,
                         "--user", Self.user, "--password", Self.password]
        if let advertise { arguments += ["--advertise", String(advertise)] }
        if noPost { arguments.append("--no-post") }
        process = try ServerProcess(arguments, log: dir.file("token.log"))
        port = try process.waitForPortFile(dir.file("port"))
    }

    func stats() throws -> [String: Int] {
        let text = try run(["curl", "-s", "-m", "10", "http://127.0.0.1:\(port)/stats"])
        return (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Int]) ?? [:]
    }

    func stop() { process.stop() }
}

/// The fault-injecting proxy (Fixtures/fault_proxy.py) in front of a registry.
final class FaultProxy: @unchecked Sendable {
    let dir: TempDir
    let process: ServerProcess
    let port: Int
    var host: String { "127.0.0.1:\(port)" }

    init(upstream: String, arguments extra: [String]) throws {
        dir = try TempDir()
        process = try ServerProcess(["python3", Fixtures.faultProxy, "--upstream", upstream, "--port-file", dir.file("port"),
                                     "--log", dir.file("requests.log")] + extra,
                                    log: dir.file("proxy.log"))
        port = try process.waitForPortFile(dir.file("port"))
    }

    /// Every request answered so far, as "METHOD PATH STATUS" lines.
    var requests: [String] {
        ((try? String(contentsOfFile: dir.file("requests.log"), encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func stats() throws -> [String: Int] {
        let text = try run(["curl", "-s", "-m", "10", "http://\(host)/_proxy/stats"])
        return (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Int]) ?? [:]
    }

    func stop() { process.stop() }
}

/// A small but real image: one uncompressed tar layer holding a random file, its config and
/// manifest, written to a temp dir.
struct TestImage {
    let layerPath: String
    let layerBytes: [UInt8]
    let layerDigest: Digest
    let config: [UInt8]
    let configDigest: Digest
    let manifest: [UInt8]
    let manifestDigest: Digest

    init(in dir: TempDir, fileSize: Int = 3 << 20, architecture: String = "amd64") throws {
        let root = dir.file("rootfs-\(architecture)")
        try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
        try Data(randomBytes(fileSize)).write(to: URL(fileURLWithPath: root + "/etc/random.bin"))
        try "ferry test image \(architecture)\n".write(toFile: root + "/etc/motd", atomically: true, encoding: .utf8)
        layerPath = dir.file("layer-\(architecture).tar")
        try run(["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf", layerPath, "-C", root, "."])
        layerBytes = Array(try Data(contentsOf: URL(fileURLWithPath: layerPath)))
        layerDigest = Digest(sha256: SHA256.hash(layerBytes))
        config = Array("""
        {"architecture":"\(architecture)","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"]},\
        "rootfs":{"type":"layers","diff_ids":["\(layerDigest)"]},"created":"2024-01-01T00:00:00Z"}
        """.utf8)
        configDigest = Digest(sha256: SHA256.hash(config))
        let manifestValue = Manifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(config.count)),
                                     layers: [Descriptor(mediaType: MediaType.ociLayerTar, digest: layerDigest, size: Int64(layerBytes.count))])
        manifest = try CanonicalJSON.encode(manifestValue)
        manifestDigest = Digest(sha256: SHA256.hash(manifest))
    }
}

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        var word = generator.next()
        for _ in 0..<8 where i < count {
            out[i] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            i += 1
        }
    }
    return out
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readFile(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// An auth.json with one `auths` entry (base64 "user:password").
func writeAuthFile(_ path: String, host: String, user: String, password: String) throws {
    let auth = Data("\(user):\(password)".utf8).base64EncodedString()
    try "{\"auths\":{\"\(host)\":{\"auth\":\"\(auth)\"}}}".write(toFile: path, atomically: true, encoding: .utf8)
}

/// The built `ferry` executable, run as a user would (output captured in files, so a chatty
/// stderr cannot fill a pipe and stall it).
enum FerryTool {
    static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    static var path: String {
        let dir = ProcessInfo.processInfo.environment["FERRY_BIN_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? packageRoot + "/.build/debug"
        return dir + "/ferry"
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `ferry arguments…` with `environment` added to (or replacing entries of) ours.
    static func run(_ arguments: [String], environment: [String: String] = [:], in dir: TempDir) throws -> Result {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw FixtureError(description: "\(path) is missing: run `swift build` first")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let id = UUID().uuidString
        let outPath = dir.file("ferry-\(id).out"), errPath = dir.file("ferry-\(id).err")
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        try process.run()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }
}

/// Pushes `image` (layer, config, manifest by tag) with `client`.
func push(_ image: TestImage, to ref: RegistryReference, with client: RegistryClient) async throws {
    try await client.pushBlob(ref, fromFile: image.layerPath, digest: image.layerDigest, size: UInt64(image.layerBytes.count))
    try await client.pushBlob(ref, bytes: image.config)
    try await client.pushManifest(ref, bytes: image.manifest, mediaType: MediaType.ociManifest)
}
