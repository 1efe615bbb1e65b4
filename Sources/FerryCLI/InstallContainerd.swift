import ArgumentParser
import Foundation

/// `ferry install-containerd`: the containerd 1.6 configuration tables that make ferryd its
/// snapshotter — printed, to merge into containerd's config.toml, or written as a whole file.
struct InstallContainerd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install-containerd",
        abstract: "Print (or write) the containerd configuration that uses ferryd as its snapshotter for CRI.")
    @Option(help: "ferryd's snapshots API socket.") var snapshotterSocket: String = "/run/ferry/containerd-snapshotter.sock"
    @Option(name: .customLong("plain-http"), help: "A registry host[:port] containerd reaches over plain HTTP (repeatable).")
    var plainHTTP: [String] = []
    @Option(help: "Write the configuration to this file instead of printing it (e.g. /etc/containerd/config.toml on a node without one).")
    var write: String?

    func run() throws {
        try reportingErrors {
            let snippet = Self.snippet(socket: snapshotterSocket, plainHTTP: plainHTTP)
            guard let write else {
                Swift.print(snippet, terminator: "")
                return
            }
            try FileManager.default.createDirectory(atPath: (write as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(snippet.utf8).write(to: URL(fileURLWithPath: write), options: .atomic)
            Swift.print("""
                wrote \(write): a containerd (version 2) configuration with Ferry's tables; if containerd already has a
                config.toml, merge these tables into it instead (containerd replaces a whole plugin section with the one
                of an imported file, so `imports` of this file would drop your other CRI settings); then restart
                containerd (ferryd must be running first: systemctl enable --now ferryd)
                """)
        }
    }

    /// The configuration: ferryd as proxy snapshotter `ferry`, CRI's default snapshotter, the
    /// snapshot annotations containerd 1.6 hides by default, and plain-HTTP mirrors.
    static func snippet(socket: String, plainHTTP: [String]) -> String {
        var out = """
            # Ferry: ferryd serves containerd's snapshots API; Ferry images start lazily, other images
            # are unpacked as by containerd's overlayfs snapshotter. Needs containerd >= 1.6.
            version = 2

            [proxy_plugins]
              [proxy_plugins.ferry]
                type = "snapshot"
                address = "\(socket)"

            [plugins."io.containerd.grpc.v1.cri".containerd]
              snapshotter = "ferry"
              # Lets the CRI plugin pass each layer's image reference and digests to the snapshotter
              # (containerd 1.6 defaults to true, which hides them and makes Ferry layers unusable).
              disable_snapshot_annotations = false

            """
        for host in plainHTTP {
            out += """
                [plugins."io.containerd.grpc.v1.cri".registry.mirrors."\(host)"]
                  endpoint = ["http://\(host)"]

                """
        }
        return out
    }
}
