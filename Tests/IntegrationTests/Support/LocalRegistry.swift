import Foundation

/// Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, with filesystem storage in a
/// temporary directory, started for one test and stopped with it.
final class LocalRegistry {
    private(set) var process = Process()
    private(set) var port = 0
    let storage: String
    var host: String { "127.0.0.1:\(port)" }

    /// Starts the registry on a random free-looking port; when the port turns out to be taken
    /// (the registry exits), tries another one.
    init(workspace: Workspace) throws {
        storage = workspace.sub("registry-data")
        let log = workspace.sub("registry.log")
        for _ in 0..<5 {
            port = TestPorts.reserve()
            let config = workspace.sub("registry.yml")
            try """
                version: 0.1
                storage:
                  filesystem:
                    rootdirectory: \(storage)
                http:
                  addr: 127.0.0.1:\(port)
                log:
                  level: error
                """.write(toFile: config, atomically: true, encoding: .utf8)
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/docker-registry")
            process.arguments = ["serve", config]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            try process.run()
            for _ in 0..<600 {  // up to 30 s: CI runs many suites at once on two cores
                if (try? Shell.run(["curl", "-sf", "http://\(host)/v2/"]))?.status == 0 { return }
                if !process.isRunning { break }
                usleep(50_000)
            }
            if process.isRunning { process.terminate(); process.waitUntilExit() }
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw Shell.Failure(command: "docker-registry", status: -1, output: "did not answer on \(host): \(output.suffix(1000))")
    }

    /// Path of a blob in the registry's storage (to corrupt it in tests).
    func blobPath(hex: String) -> String {
        "\(storage)/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data"
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
    }
}
