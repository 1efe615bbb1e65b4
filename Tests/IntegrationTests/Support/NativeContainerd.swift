import Foundation
import Testing

/// containerd (Debian's 1.6) as a reference unpacker: started by a test with its own config,
/// root, state and socket in the test's workspace, with the CRI plugin off and nothing but its
/// built-in snapshotters. `unpack` imports an image the way `ctr images import` does and
/// returns the directory the `native` snapshotter extracted it into, layer by layer, with
/// containerd's own applier (archive/tar.go `applyNaive`).
///
/// Safe to share between threads: it holds only constants, and each unpack is a separate `ctr`
/// process in a namespace of its own.
final class NativeContainerd: @unchecked Sendable {
    private let process = Process()
    let directory: String
    let socket: String
    private let logPath: String

    /// Programs it needs.
    static let tools = ["containerd", "ctr", "tar"]

    init(workspace: Workspace) throws {
        directory = workspace.sub("containerd")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        socket = directory + "/containerd.sock"
        logPath = directory + "/containerd.log"
        let config = directory + "/config.toml"
        try """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]

            [grpc]
              address = "\(socket)"
            [ttrpc]
              address = "\(socket).ttrpc"
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = self.socket
        if try launchContainerd(process, config: config, logPath: logPath, answers: { (try? Shell.run(["ctr", "--address", socket, "version"]))?.status == 0 }) {
            return
        }
        stopProcess(process)
        throw Shell.Failure(command: "containerd --config \(config)", status: -1,
                            output: String(((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").suffix(3000)))
    }

    deinit { stopProcess(process) }

    /// One image unpacked by containerd, or refused.
    struct Unpack {
        /// The namespace the image was imported into (removed by `remove`).
        var namespace: String
        /// The top snapshot's directory: the image's rootfs as containerd made it; nil when
        /// containerd refused the image.
        var rootfs: String?
        /// Why containerd refused the image (ctr's message).
        var refusal: String?
        /// Seconds since the epoch during which containerd unpacked: directory times it stamps
        /// itself (the native snapshotter's copies, `mkparent`) fall in here.
        var window: ClosedRange<Int64>
    }

    /// `ctr --address … --namespace <namespace> <arguments>`.
    private func ctr(_ namespace: String, _ arguments: [String]) -> [String] {
        ["ctr", "--address", socket, "--namespace", namespace] + arguments
    }

    /// Imports `input` (a Ferry input: `oci:LAYOUT:TAG` or `docker-archive:PATH`) into a
    /// namespace of its own and unpacks it with the native snapshotter; `scratch` is a
    /// directory for the archive's index.
    func unpack(_ input: String, scratch: String) throws -> Unpack {
        let namespace = "ferry-" + UUID().uuidString.prefix(13).lowercased()
        let start = Int64(Date().timeIntervalSince1970)
        let imported: Shell.Result
        let importArguments = ctr(namespace, ["images", "import", "--snapshotter", "native"])
        if input.hasPrefix("docker-archive:") {
            // Named by the archive's RepoTags.
            imported = try Shell.run(importArguments + [String(input.dropFirst("docker-archive:".count))])
        } else if input.hasPrefix("oci:"), let colon = input.lastIndex(of: ":"), colon > input.index(input.startIndex, offsetBy: 3) {
            let layout = String(input[input.index(input.startIndex, offsetBy: 4)..<colon])
            let tag = String(input[input.index(after: colon)...])
            // An OCI archive of the layout whose index names only `tag` (ctr imports every
            // manifest an index names; snapshots of the same layers would be shared).
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            try Self.writeIndex(of: layout, tag: tag, to: scratch + "/index.json")
            imported = try Shell.run(["sh", "-c", "l=$1 s=$2; shift 2; tar -cf - -C \"$l\" oci-layout blobs -C \"$s\" index.json | \"$@\"", "sh",
                                      layout, scratch] + importArguments + ["--base-name", "ferry.test/stack", "-"])
        } else {
            throw Shell.Failure(command: "containerd import", status: -1, output: "cannot import \(input)")
        }
        var unpack = Unpack(namespace: namespace, window: start...(Int64(Date().timeIntervalSince1970) + 1))
        guard imported.status == 0 else {
            unpack.refusal = (imported.stderr + imported.stdout).trimmingCharacters(in: .whitespacesAndNewlines)
            return unpack
        }
        // The top of the single chain is the snapshot no other names as its parent.
        let listing = try Shell.check(ctr(namespace, ["snapshots", "--snapshotter", "native", "ls"]))
        let rows = listing.split(separator: "\n").dropFirst().map { $0.split(separator: " ").map(String.init) }
        let parents = Set(rows.compactMap { $0.count == 3 ? $0[1] : nil })
        let tops = rows.compactMap { $0.first }.filter { !parents.contains($0) }
        guard tops.count == 1, let top = tops.first else {
            throw Shell.Failure(command: "ctr snapshots ls", status: -1, output: "no single top snapshot:\n\(listing)")
        }
        // A view of a committed snapshot is a read-only bind of its directory: read that.
        let mounts = try Shell.check(ctr(namespace, ["snapshots", "--snapshotter", "native", "view", "--mounts", "view", top]))
        let parsed = try JSONSerialization.jsonObject(with: Data(mounts.utf8)) as? [[String: Any]]
        guard let source = parsed?.first?["Source"] as? String, parsed?.count == 1 else {
            throw Shell.Failure(command: "ctr snapshots view", status: -1, output: mounts)
        }
        unpack.rootfs = source
        return unpack
    }

    /// Removes the image, its snapshots and content and the namespace.
    func remove(_ unpack: Unpack) {
        let namespace = unpack.namespace
        _ = try? Shell.run(ctr(namespace, ["snapshots", "--snapshotter", "native", "rm", "view"]))
        if let images = try? Shell.check(ctr(namespace, ["images", "ls", "-q"])) {
            let names = images.split(separator: "\n").map(String.init)
            if !names.isEmpty { _ = try? Shell.run(ctr(namespace, ["images", "rm", "--sync"] + names)) }
        }
        // A refused import can leave committed lower snapshots behind until the collector runs.
        _ = try? Shell.run(ctr(namespace, ["namespaces", "rm", namespace]))
    }

    /// Writes an OCI index naming only the manifest `layout` tags `tag`.
    private static func writeIndex(of layout: String, tag: String, to path: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: layout + "/index.json"))
        var index = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let manifests = try #require(index["manifests"] as? [[String: Any]])
        let tagged = manifests.filter { ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] == tag }
        guard tagged.count == 1 else { throw Shell.Failure(command: "index.json", status: -1, output: "\(layout) tags \(tag) \(tagged.count) times") }
        index["manifests"] = tagged
        try JSONSerialization.data(withJSONObject: index).write(to: URL(fileURLWithPath: path))
    }
}
