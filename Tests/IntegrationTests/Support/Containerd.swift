import Foundation
import Testing

/// Debian's containerd (1.6) started by a test with a config, root, state and sockets of its own
/// in the test's workspace, with ferryd's snapshotter as the proxy plugin `ferry` and the CRI
/// plugin set up the way an operator does for Ferry (`Kernel-Notes/containerd.md`).
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
        try """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"

            [grpc]
              address = "\(socket)"
            [ttrpc]
              address = "\(socket).ttrpc"
            [debug]
              address = "\(directory)/debug.sock"
              level = "debug"

            [proxy_plugins]
              [proxy_plugins.ferry]
                type = "snapshot"
                address = "\(snapshotterSocket)"

            [plugins."io.containerd.grpc.v1.cri"]
              sandbox_image = "\(sandboxImage)"
              restrict_oom_score_adj = true
              [plugins."io.containerd.grpc.v1.cri".containerd]
                snapshotter = "ferry"
                disable_snapshot_annotations = false
              [plugins."io.containerd.grpc.v1.cri".cni]
                bin_dir = "\(directory)/cni-bin"
                conf_dir = "\(directory)/cni-conf"
              [plugins."io.containerd.grpc.v1.cri".registry.mirrors."\(registry)"]
                endpoint = ["http://\(registry)"]
            """.write(toFile: config, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/containerd")
        process.arguments = ["--config", config]
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        for _ in 0..<600 {
            if (try? ctr(["version"])) != nil { return }
            if !process.isRunning { break }
            usleep(50_000)
        }
        throw Shell.Failure(command: "containerd", status: -1, output: String(self.log.suffix(3000)))
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
