import FerrySystem
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import ContainerdAPI
import SwiftProtobuf
import Testing

/// ferryd as containerd's snapshotter (`[proxy_plugins.ferry]`), driven by a real containerd
/// 1.6 with runc: ordinary OCI images through `ctr`, Ferry images through CRI the way kubelet
/// pulls and runs them.
@Suite(.serialized) struct ContainerdTests {
    static let tools = ["containerd", "ctr", "runc", "containerd-shim-runc-v2", "umoci", "skopeo", "docker-registry", "curl", "tar"]

    /// A plain OCI image (gzip layers, made by umoci) pulled with `ctr image pull --snapshotter
    /// ferry` runs, and a read-only view of its rootfs equals `umoci unpack` in every byte and
    /// attribute.
    @Test func ordinaryOCIImageRunsAndItsViewEqualsUmociUnpack() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace("ctr-oci")
        let registry = try LocalRegistry(workspace: ws)
        let image = try TestImages.busybox(ws, name: "bb", registry: registry.host, extraLayers: 2)
        let daemon = try DaemonProcess(workspace: ws, extraArguments: ["--plain-http", registry.host])
        let containerd = try ContainerdProcess(workspace: ws, snapshotterSocket: ws.sub("containerd-snapshotter.sock"),
                                               registry: registry.host, sandboxImage: "\(registry.host)/pause:oci")
        let ref = "\(registry.host)/bb:oci"
        try containerd.ctr(["image", "pull", "--plain-http", "--snapshotter", "ferry", ref])
        let out = try containerd.ctr(["run", "--rm", "--snapshotter", "ferry", ref, "oci-run", "/bin/cat", "/greeting"])
        #expect(out == "hello from bb\n", "container printed \(out)\n\(daemon.log.suffix(2000))")

        let view = ws.sub("view")
        try FileManager.default.createDirectory(atPath: view, withIntermediateDirectories: true)
        try containerd.ctr(["image", "mount", "--snapshotter", "ferry", ref, view])
        defer { _ = try? containerd.ctr(["image", "unmount", "--rm", view]) }
        let diff = try TreeDiff.differences(expected: image.unpacked, actual: view)
        #expect(diff.isEmpty, "view differs from umoci unpack:\n\(diff.prefix(20).joined(separator: "\n"))")
    }

    /// CRI: PullImage of a Ferry image puts no layer into containerd's content store (the layers
    /// are remote snapshots), a pod and a container run a program from the lazy mount and log
    /// its output, and ferryd has fetched only part of the image. Then a container started with
    /// `ctr run --snapshotter ferry` writes into its own upper directory, never into the image.
    /// Removing the pod and the image lets containerd's GC remove every snapshot, the lazy mount
    /// goes, and the snapshotter's database holds nothing.
    @Test func criPullsAFerryImageLazilyRunsItAndCollectsIt() async throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace("cri-ferry")
        let registry = try LocalRegistry(workspace: ws)
        _ = try TestImages.pause(ws, registry: registry.host)
        let source = try TestImages.busybox(ws, name: "app", registry: registry.host, bigFileMiB: 8)
        let ferryRef = "\(registry.host)/app:ferry"
        try Shell.check([Build.ferry, "convert", "oci:\(source.layout):t", "oci:\(ws.sub("app-ferry")):t", "--chunk-size", "64KiB"])
        try Shell.check([Build.ferry, "push", "oci:\(ws.sub("app-ferry")):t", "docker://\(ferryRef)", "--plain-http", registry.host])
        let daemon = try DaemonProcess(workspace: ws, extraArguments: ["--plain-http", registry.host])
        let containerd = try ContainerdProcess(workspace: ws, snapshotterSocket: ws.sub("containerd-snapshotter.sock"),
                                               registry: registry.host, sandboxImage: "\(registry.host)/pause:oci")
        let cri = CRIClient(socket: containerd.socket)

        let imageRef = try await cri.pullImage(ferryRef)
        #expect(!imageRef.isEmpty)
        // Only the manifest and config are content; no layer blob was downloaded.
        let content = try containerd.ctr(["content", "ls", "-q"]).split(separator: "\n").map(String.init)
        let layers = try TestImages.layerDigests(layout: ws.sub("app-ferry"), tag: "t")
        #expect(!layers.isEmpty && layers.allSatisfy { !content.contains($0) },
                "layer blobs in containerd's content store: \(content)\n\(containerd.log.suffix(3000))")

        let logs = ws.sub("pod-logs")
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        let pod = try await cri.runPodSandbox(name: "ferry-pod", logDirectory: logs)
        let container = try await cri.createContainer(pod: pod, name: "app", image: ferryRef, command: ["/bin/cat", "/greeting"],
                                                      logPath: "app.log", logDirectory: logs)
        try await cri.startContainer(container)
        let status = try await cri.waitForExit(container)
        #expect(status.exitCode == 0, "container exit \(status.exitCode): \(status.reason) \(status.message)")
        let log = (try? String(contentsOfFile: logs + "/app.log", encoding: .utf8)) ?? ""
        #expect(log.contains("hello from app"), "container log: \(log)\n\(daemon.log.suffix(3000))")
        let image = try #require(try daemon.images().first)
        let fetched = try #require(image["bytesFetched"] as? Int)
        let blobBytes = try TestImages.blobBytes(layout: ws.sub("app-ferry"), tag: "t")
        #expect(fetched > 0 && fetched < blobBytes / 2, "fetched \(fetched) of \(blobBytes) compressed bytes")
        print("CRI: pulled \(ferryRef) as \(imageRef); content store holds \(content.count) blobs; container log \(log.debugDescription); "
              + "ferryd fetched \(fetched) of \(blobBytes) compressed bytes")

        // ctr run on the CRI-pulled image: writes land in the container's upper directory.
        let written = try containerd.ctr(["run", "--rm", "--snapshotter", "ferry", ferryRef, "writer",
                                          "/bin/sh", "-c", "echo scribble > /greeting && cat /greeting"])
        #expect(written == "scribble\n")
        let lazyMounts = try readWholeFile("/proc/self/mounts").split(separator: "\n")
            .filter { $0.contains(daemon.stateDirectory + "/snapshotter/lazy/") }
        #expect(lazyMounts.count == 1, "one lazy mount: \(lazyMounts)")
        if let lazy = lazyMounts.first?.split(separator: " ").dropFirst().first {
            let original = try String(contentsOfFile: String(lazy) + "/greeting", encoding: .utf8)
            #expect(original == "hello from app\n", "the image is unchanged: \(original)")
        }

        // Garbage collection: pod and image gone → snapshots, lazy mount and records gone.
        try await cri.stopPodSandbox(pod)
        try await cri.removePodSandbox(pod)
        try await cri.removeImage(ferryRef)
        try await cri.removeImage("\(registry.host)/pause:oci")
        var remaining: [String] = []
        for _ in 0..<100 {
            remaining = try containerd.ctr(["snapshots", "--snapshotter", "ferry", "ls"]).split(separator: "\n").dropFirst().map(String.init)
            if remaining.isEmpty { break }
            usleep(200_000)
        }
        #expect(remaining.isEmpty, "snapshots left after GC: \(remaining)")
        let mountsAfter = try readWholeFile("/proc/self/mounts")
        #expect(!mountsAfter.contains(daemon.stateDirectory + "/snapshotter/"), "mounts left:\n\(mountsAfter)")
        let rows = try Shell.check(["python3", "-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from snapshot').fetchone()[0])",
                                    daemon.stateDirectory + "/snapshotter/metadata.db"])
        #expect(rows.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "database rows left: \(rows)")
        // The calls containerd made, in order (Kernel-Notes/containerd.md describes them).
        let calls = daemon.log.split(separator: "\n").compactMap { line -> String? in
            guard let range = line.range(of: "snapshots: ") else { return nil }
            return String(line[range.upperBound...]).replacingOccurrences(of: #"sha256:[0-9a-f]{64}"#, with: "sha256:…", options: .regularExpression)
        }
        print("snapshots calls during pull, run and GC:\n  " + calls.joined(separator: "\n  "))
    }
}

/// ferryd's snapshots API answers bad requests with the statuses containerd maps back to its own
/// errors, refuses a Ferry layer it cannot serve with a message naming the layer (nothing stays
/// mounted or recorded), and keeps serving.
@Suite(.serialized) struct SnapshotterErrorTests {
    @Test func badRequestsGetStatusesContainerdUnderstands() async throws {
        guard integrationPrerequisitesMet(tools: ["docker-registry", "curl", "umoci", "skopeo", "tar"]) else { return }
        let ws = try Workspace("snap-errors")
        let registry = try LocalRegistry(workspace: ws)
        let source = try TestImages.busybox(ws, name: "bad", registry: registry.host)
        let layout = ws.sub("bad-ferry")
        try Shell.check([Build.ferry, "convert", "oci:\(source.layout):t", "oci:\(layout):t"])
        try Shell.check([Build.ferry, "push", "oci:\(layout):t", "docker://\(registry.host)/bad:ferry", "--plain-http", registry.host])
        let layers = try TestImages.layerDigests(layout: layout, tag: "t")
        let bootstrap = try #require(layers.last)
        let manifestDigest = try Shell.check(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                                              "docker://\(registry.host)/bad:ferry"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let daemon = try DaemonProcess(workspace: ws, extraArguments: ["--plain-http", registry.host])
        let api = SnapshotsAPI(socket: ws.sub("containerd-snapshotter.sock"))

        #expect(try await api.status { try await $0.prepare(key: "k1", parent: "no-such-parent") } == .notFound)
        #expect(try await api.status { try await $0.prepare(key: "dup", parent: "") } == nil)
        #expect(try await api.status { try await $0.prepare(key: "dup", parent: "") } == .alreadyExists)
        #expect(try await api.status { try await $0.commit(name: "c", key: "missing") } == .notFound)
        #expect(try await api.status { try await $0.view(key: "v", parent: "") } == nil)
        #expect(try await api.status { try await $0.commit(name: "c", key: "v") } == .failedPrecondition)
        #expect(try await api.status { try await $0.prepare(key: "child", parent: "dup") } == .failedPrecondition,
                "an active snapshot is no parent")
        #expect(try await api.status { try await $0.remove(key: "nothing") } == .notFound)

        // A Ferry bootstrap layer whose digest is not the manifest's bootstrap: refused, nothing kept.
        func ferryLabels(layer: String) -> [String: String] {
            ["containerd.io/snapshot/ferry.layer": "bootstrap", "containerd.io/snapshot.ref": "sha256:" + String(repeating: "c", count: 64),
             "containerd.io/snapshot/cri.image-ref": "\(registry.host)/bad:ferry",
             "containerd.io/snapshot/cri.manifest-digest": manifestDigest, "containerd.io/snapshot/cri.layer-digest": layer]
        }
        let wrong = "sha256:" + String(repeating: "a", count: 64)
        let wrongLabels = ferryLabels(layer: wrong)
        let mismatch = try await api.error { try await $0.prepare(key: "extract-1", parent: "", labels: wrongLabels) }
        #expect(mismatch?.code == .failedPrecondition && mismatch?.message.contains(wrong) == true, "\(String(describing: mismatch))")
        // Another conversion whose bootstrap blob is corrupt in the registry: refused, naming the layer.
        let other = ws.sub("corrupt-ferry")
        try Shell.check([Build.ferry, "convert", "oci:\(source.layout):t", "oci:\(other):t", "--chunk-size", "64KiB"])
        try Shell.check([Build.ferry, "push", "oci:\(other):t", "docker://\(registry.host)/corrupt:ferry", "--plain-http", registry.host])
        let otherBootstrap = try #require(try TestImages.layerDigests(layout: other, tag: "t").last)
        let otherManifest = try Shell.check(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                                             "docker://\(registry.host)/corrupt:ferry"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let hex = String(otherBootstrap.dropFirst("sha256:".count))
        let blob = registry.blobPath(hex: hex)
        let size = try FileManager.default.attributesOfItem(atPath: blob)[.size] as? Int ?? 0
        try Data(repeating: 0x5a, count: size).write(to: URL(fileURLWithPath: blob))
        var corruptLabels = ferryLabels(layer: otherBootstrap)
        corruptLabels["containerd.io/snapshot/cri.image-ref"] = "\(registry.host)/corrupt:ferry"
        corruptLabels["containerd.io/snapshot/cri.manifest-digest"] = otherManifest
        let labels = corruptLabels
        let corrupt = try await api.error { try await $0.prepare(key: "extract-2", parent: "", labels: labels) }
        #expect(corrupt?.code == .failedPrecondition && corrupt?.message.contains(hex) == true, "\(String(describing: corrupt))")
        #expect(try await api.status { try await $0.stat(key: "sha256:" + String(repeating: "c", count: 64)) } == .notFound,
                "no snapshot recorded for the refused layer")
        let mounts = try readWholeFile("/proc/self/mounts")
        #expect(!mounts.contains(daemon.stateDirectory), "nothing stays mounted:\n\(mounts)")
        // Still serving.
        #expect(try await api.status { try await $0.stat(key: "dup") } == nil)
        #expect(try await api.list().sorted() == ["dup", "v"])
    }
}

/// A direct client of ferryd's snapshots API, for the error tests.
struct SnapshotsAPI {
    let socket: String
    typealias API = Containerd_Services_Snapshots_V1_Snapshots.Client<HTTP2ClientTransport.Posix>

    func call<T: Sendable>(_ body: @Sendable @escaping (Calls) async throws -> T) async throws -> T {
        try await withGRPCClient(transport: .http2NIOPosix(target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)) { client in
            try await body(Calls(api: API(wrapping: client)))
        }
    }

    /// The error a call ends with, or nil when it succeeds.
    func error(_ body: @Sendable @escaping (Calls) async throws -> Void) async throws -> RPCError? {
        do {
            try await call(body)
            return nil
        } catch let error as RPCError {
            return error
        }
    }

    func status(_ body: @Sendable @escaping (Calls) async throws -> Void) async throws -> RPCError.Code? {
        try await error(body)?.code
    }

    func list() async throws -> [String] {
        try await call { try await $0.list() }
    }

    struct Calls: Sendable {
        let api: API
        func prepare(key: String, parent: String, labels: [String: String] = [:]) async throws {
            _ = try await api.prepare(.with { $0.snapshotter = "ferry"; $0.key = key; $0.parent = parent; $0.labels = labels })
        }
        func view(key: String, parent: String) async throws {
            _ = try await api.view(.with { $0.snapshotter = "ferry"; $0.key = key; $0.parent = parent })
        }
        func commit(name: String, key: String) async throws {
            _ = try await api.commit(.with { $0.snapshotter = "ferry"; $0.name = name; $0.key = key })
        }
        func remove(key: String) async throws {
            _ = try await api.remove(.with { $0.snapshotter = "ferry"; $0.key = key })
        }
        func stat(key: String) async throws {
            _ = try await api.stat(.with { $0.snapshotter = "ferry"; $0.key = key })
        }
        func list() async throws -> [String] {
            try await api.list(.with { $0.snapshotter = "ferry" }) { response in
                var names: [String] = []
                for try await message in response.messages { names += message.info.map(\.name) }
                return names
            }
        }
    }
}

/// ferryd stopped (SIGTERM) and killed (SIGKILL) and started again while a container started by
/// containerd reads its image's files for the first time: every byte the container reads is
/// right, and containerd's Stat, List and Remove work afterwards.
@Suite(.serialized) struct ContainerdRestartTests {
    @Test func containerReadsCorrectBytesAcrossFerrydRestarts() async throws {
        guard integrationPrerequisitesMet(tools: ContainerdTests.tools + ["md5sum"]) else { return }
        let ws = try Workspace("cri-restart")
        let registry = try LocalRegistry(workspace: ws)
        _ = try TestImages.pause(ws, registry: registry.host)
        let files = 60
        let source = try TestImages.busybox(ws, name: "reader", registry: registry.host, dataFiles: files)
        let ferryRef = "\(registry.host)/reader:ferry"
        try Shell.check([Build.ferry, "convert", "oci:\(source.layout):t", "oci:\(ws.sub("reader-ferry")):t", "--chunk-size", "16KiB"])
        try Shell.check([Build.ferry, "push", "oci:\(ws.sub("reader-ferry")):t", "docker://\(ferryRef)", "--plain-http", registry.host])
        var daemon = try DaemonProcess(workspace: ws, extraArguments: ["--plain-http", registry.host])
        let containerd = try ContainerdProcess(workspace: ws, snapshotterSocket: ws.sub("containerd-snapshotter.sock"),
                                               registry: registry.host, sandboxImage: "\(registry.host)/pause:oci")
        _ = try await CRIClient(socket: containerd.socket).pullImage(ferryRef)
        var expected: [String: String] = [:]
        for i in 0..<files {
            let sum = try Shell.check(["md5sum", source.unpacked + "/data/f\(i)"]).split(separator: " ").first.map(String.init) ?? ""
            expected["/data/f\(i)"] = sum
        }

        // The container reads one file every 100 ms, each for the first time (a fill each).
        let reader = Process()
        reader.executableURL = URL(fileURLWithPath: "/usr/bin/ctr")
        reader.arguments = ["--address", containerd.socket, "--namespace", containerd.namespace, "run", "--rm", "--snapshotter", "ferry",
                            ferryRef, "restart-reader", "/bin/sh", "-c",
                            "for i in $(seq 0 \(files - 1)); do md5sum /data/f$i; sleep 0.1; done"]
        let out = Pipe(), err = Pipe()
        reader.standardOutput = out
        reader.standardError = err
        try reader.run()
        usleep(1_500_000)
        // The successor takes the fanotify group over from the holder the first ferryd started,
        // which must outlive each replaced ferryd.
        daemon.kill(signal: SIGTERM)
        daemon.endsGroupHolder = false
        daemon = try DaemonProcess(workspace: ws, extraArguments: ["--plain-http", registry.host])
        usleep(1_500_000)
        daemon.kill(signal: SIGKILL)
        daemon.endsGroupHolder = false
        usleep(200_000)
        daemon = try DaemonProcess(workspace: ws, extraArguments: ["--plain-http", registry.host])
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        reader.waitUntilExit()
        var right = 0, wrong: [String] = []
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count == 2 else { continue }
            if expected[String(parts[1])] == String(parts[0]) { right += 1 } else { wrong.append(String(line)) }
        }
        let failed = errors.split(separator: "\n").filter { $0.contains("md5sum") }
        print("containerd restart: \(right) files read right, \(wrong.count) wrong, \(failed.count) failed reads (\(failed))")
        #expect(wrong.isEmpty, "WRONG BYTES: \(wrong)")
        // A read in flight when ferryd was SIGKILLed may fail with EIO (Kernel-Notes/fanotify-precontent.md); none other.
        #expect(right + failed.count == files && failed.count <= 2, "output:\n\(output)\nerrors:\n\(errors)\n\(daemon.log.suffix(2000))")

        // containerd's List, Stat and Remove against the restarted ferryd.
        let listed = try containerd.ctr(["snapshots", "--snapshotter", "ferry", "ls"]).split(separator: "\n").dropFirst()
        #expect(!listed.isEmpty)
        let top = try #require(listed.compactMap { $0.split(separator: " ").first.map(String.init) }.first)
        try containerd.ctr(["snapshots", "--snapshotter", "ferry", "info", top])
        try containerd.ctr(["snapshots", "--snapshotter", "ferry", "prepare", "after-restart", top])
        try containerd.ctr(["snapshots", "--snapshotter", "ferry", "rm", "after-restart"])
        let after = try containerd.ctr(["snapshots", "--snapshotter", "ferry", "ls"])
        #expect(!after.contains("after-restart"))
    }
}
