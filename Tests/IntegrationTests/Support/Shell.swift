import FerrySystem
import Foundation
import Testing

/// Runs real programs for the integration tests and reports their output on failure.
enum Shell {
    struct Failure: Error, CustomStringConvertible {
        var command: String
        var status: Int32
        var output: String
        var description: String { "`\(command)` exited with \(status):\n\(output)" }
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `arguments` (argv[0] looked up in PATH) and returns its status and output.
    @discardableResult
    static func run(_ arguments: [String], environment: [String: String] = [:], input: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        if let input {
            let inPipe = Pipe()
            process.standardInput = inPipe
            try process.run()
            inPipe.fileHandleForWriting.write(Data(input.utf8))
            try inPipe.fileHandleForWriting.close()
        } else {
            process.standardInput = FileHandle.nullDevice
            try process.run()
        }
        // Read both pipes concurrently so a chatty child cannot fill one and block.
        let errData = LockedData()
        let errThread = Thread { errData.set(err.fileHandleForReading.readDataToEndOfFile()) }
        errThread.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errData.isSet { usleep(1000) }
        return Result(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData.value, as: UTF8.self))
    }

    /// Runs `arguments` and throws `Failure` (with the output) unless it exits 0.
    @discardableResult
    static func check(_ arguments: [String], environment: [String: String] = [:]) throws -> String {
        let r = try run(arguments, environment: environment)
        guard r.status == 0 else {
            throw Failure(command: arguments.joined(separator: " "), status: r.status, output: r.stdout + r.stderr)
        }
        return r.stdout
    }

    /// Whether a program is on PATH.
    static func has(_ program: String) -> Bool {
        (try? run(["sh", "-c", "command -v \(program)"]).status) == 0
    }
}

final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var done = false
    func set(_ d: Data) { lock.lock(); data = d; done = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return done }
    var value: Data { lock.lock(); defer { lock.unlock() }; return data }
}

/// A temporary directory removed when the test ends (unmounting anything left mounted in it).
final class Workspace {
    let path: String

    init(_ name: String) throws {
        path = NSTemporaryDirectory() + "ferry-\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func sub(_ name: String) -> String { "\(path)/\(name)" }

    deinit {
        // Lazy-unmount whatever a failed test left mounted below us, deepest first.
        if let mounts = try? readWholeFile("/proc/self/mounts") {
            for line in mounts.split(separator: "\n").reversed() {
                let fields = line.split(separator: " ")
                if fields.count > 1, fields[1].hasPrefix(path) { _ = try? Shell.run(["umount", "-l", String(fields[1])]) }
            }
        }
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Where the package's built executables are.
enum Build {
    static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
    }

    static var binDirectory: String {
        if let dir = ProcessInfo.processInfo.environment["FERRY_BIN_DIR"], !dir.isEmpty { return dir }
        return packageRoot + "/.build/debug"
    }

    static var ferry: String { binDirectory + "/ferry" }
    static var ferryd: String { binDirectory + "/ferryd" }

    static func fixture(_ name: String) -> String { packageRoot + "/Tests/IntegrationTests/Fixtures/" + name }

    /// True in CI, where a missing tool must fail a test instead of skipping it.
    static var integrationRequired: Bool { !(ProcessInfo.processInfo.environment["FERRY_REQUIRE_INTEGRATION"] ?? "").isEmpty }

    /// Why the integration tests cannot run here, or nil when they can.
    static func missingPrerequisite(tools: [String], root: Bool = true) -> String? {
        if root && getuid() != 0 { return "not running as root" }
        for tool in tools where !Shell.has(tool) { return "\(tool) is not installed (Tools/setup installs it)" }
        return nil
    }
}
