import Foundation
import Testing

/// Debian's containerd (1.6) started by a test with a config, root, state and sockets of its own
/// in the test's workspace, configured the way an operator does it: the tables `ferry
/// install-containerd` prints (ferryd as proxy snapshotter `ferry`, CRI's snapshotter, snapshot
/// annotations on, a plain-HTTP mirror) in a config that adds only the test's own paths.
final class ContainerdProcess {
    let process = Process()
    let directory: String
    let socket: String
    let logPath: String
    let namespace = "k8s.io"

    /// - Parameters:
    ///   - snapshotterSocket: ferryd's snapshots API socket.
    ///   - registry: a plain-HTTP registry (`host:port`) the CRI plugin may pull from.
    ///   - sandboxImage: the pause image RunPodSandbox starts (in `registry`).
    init(workspace: Workspace, snapshotterSocket: String, registry: String, sandboxImage: String) throws {
        directory = workspace.sub("containerd")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        socket = directory + "/containerd.sock"
        logPath = directory + "/containerd.log"
        let config = directory + "/config.toml"
        // The Ferry part is what `ferry install-containerd` prints for operators, taken as it
        // is; the test adds only its own paths and the pause image around it.
        let snippet = try Shell.check([Build.ferry, "install-containerd", "--snapshotter-socket", snapshotterSocket,
                                       "--plain-http", registry])
        let ferryTables = snippet.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { $0.trimmingCharacters(in: .whitespaces) != "version = 2" }.joined(separator: "\n")
        try """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"

            \(ferryTables)

            [grpc]
              address = "\(socket)"
            [ttrpc]
              address = "\(socket).ttrpc"
            [debug]
              address = "\(directory)/debug.sock"
              level = "debug"

            [plugins."io.containerd.grpc.v1.cri"]
              sandbox_image = "\(sandboxImage)"
              restrict_oom_score_adj = true
              [plugins."io.containerd.grpc.v1.cri".cni]
                bin_dir = "\(directory)/cni-bin"
                conf_dir = "\(directory)/cni-conf"
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = self.socket
        guard try launchContainerd(process, config: config, logPath: logPath, answers: { (try? Shell.run(["ctr", "--address", socket, "version"]))?.status == 0 }) else {
            throw Shell.Failure(command: "containerd", status: -1, output: String(self.log.suffix(3000)))
        }
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// `ctr --address … --namespace k8s.io <arguments>`.
    @discardableResult
    func ctr(_ arguments: [String]) throws -> String {
        try Shell.check(["ctr", "--address", socket, "--namespace", namespace] + arguments)
    }

    deinit {
        // Containers first (their shims keep mounts), then containerd.
        if let list = try? ctr(["tasks", "ls", "-q"]) {
            for id in list.split(separator: "\n") { _ = try? ctr(["tasks", "kill", "-s", "SIGKILL", String(id)]) }
        }
        stopProcess(process)
        _ = try? Shell.run(["pkill", "-f", "containerd-shim-runc-v2 -namespace \(namespace) -address \(socket)"])
    }
}

/// Starts `/usr/bin/containerd --config CONFIG` as `process`, its output in `logPath`, and waits
/// up to 30 s for `answers()`; false when containerd exited or did not answer in time.
func launchContainerd(_ process: Process, config: String, logPath: String, answers: () -> Bool) throws -> Bool {
    _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    process.executableURL = URL(fileURLWithPath: "/usr/bin/containerd")
    process.arguments = ["--config", config]
    let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
    process.standardOutput = log
    process.standardError = log
    try process.run()
    for _ in 0..<600 {
        if answers() { return true }
        if !process.isRunning { return false }
        usleep(50_000)
    }
    return false
}
