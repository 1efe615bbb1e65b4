import Foundation
import Testing

/// A small image of a few MB for the peer tests: files of random and of repetitive bytes,
/// converted with 64 KiB chunks and pushed to a real registry that is reached through a
/// counting front, so the registry's egress can be measured.
final class P2PImage {
    let workspace: Workspace
    /// The source tree every mounted byte is compared with.
    let tree: String
    /// Relative paths of the files.
    let files: [String]
    let layout: String
    let registry: LocalRegistry
    let front: CountingFront
    /// `docker://<front>/p2p:ferry`
    var reference: String { "docker://\(front.host)/p2p:ferry" }

    init(_ ws: Workspace, fileCount: Int = 24) throws {
        workspace = ws
        tree = ws.sub("tree")
        var names: [String] = []
        var generator = SystemRandomNumberGenerator()
        for i in 0..<fileCount {
            let dir = "d\(i % 4)"
            try FileManager.default.createDirectory(atPath: "\(tree)/\(dir)", withIntermediateDirectories: true)
            let size = 60_000 + (i * 37_813) % 240_000
            var bytes = [UInt8](repeating: 0, count: size)
            if i % 3 == 0 {
                let line = Array("ferry peer chunk \(i) ".utf8)
                for k in 0..<size { bytes[k] = line[k % line.count] }
            } else {
                for k in 0..<size { bytes[k] = UInt8.random(in: 0...255, using: &generator) }
            }
            let name = "\(dir)/file-\(i).bin"
            try Data(bytes).write(to: URL(fileURLWithPath: "\(tree)/\(name)"))
            names.append(name)
        }
        files = names
        let source = ws.sub("source")
        try Shell.check(["tar", "--numeric-owner", "-C", tree, "-cf", ws.sub("layer.tar"), "."])
        try Shell.check(["umoci", "init", "--layout", source])
        try Shell.check(["umoci", "new", "--image", "\(source):t"])
        try Shell.check(["umoci", "raw", "add-layer", "--no-history", "--image", "\(source):t", ws.sub("layer.tar")])
        layout = ws.sub("ferry-image")
        try Shell.check([Build.ferry, "convert", "oci:\(source):t", "oci:\(layout):t", "--chunk-size", "64KiB"])
        registry = try LocalRegistry(workspace: ws)
        front = try CountingFront(upstream: registry.host)
        // Pushed to the registry directly: only reads go through the front.
        try Shell.check([Build.ferry, "push", "oci:\(layout):t", "docker://\(registry.host)/p2p:ferry", "--plain-http", registry.host])
    }

    /// SHA-256 digests (hex) of every distinct chunk of the image, from `ferry inspect --chunks`.
    func chunkDigests() throws -> [String] {
        var seen = Set<String>()
        var out: [String] = []
        for file in files {
            let json = try Shell.check([Build.ferry, "inspect", "oci:\(layout):t", "--chunks", file, "--json"])
            let rows = (try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]) ?? []
            for row in rows {
                if let d = row["digest"] as? String, seen.insert(d).inserted { out.append(d) }
            }
        }
        return out
    }
}

/// Fixtures/counting_front.py: a TCP front of the registry counting the bytes it sends back.
final class CountingFront {
    let process = Process()
    let port: Int
    let statsPort: Int
    var host: String { "127.0.0.1:\(port)" }

    init(upstream: String) throws {
        port = TestPorts.reserve(2)
        statsPort = port + 1
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [Build.fixture("counting_front.py"), String(port), upstream, String(statsPort)]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<600 {  // up to 30 s: CI runs many suites at once on two cores
            if (try? Shell.run(["curl", "-sf", "http://\(host)/v2/"]))?.status == 0,
               (try? Shell.run(["curl", "-sf", "http://127.0.0.1:\(statsPort)/"]))?.status == 0 { return }
            usleep(50_000)
        }
        throw Shell.Failure(command: "counting_front.py", status: -1, output: "did not answer on \(host)")
    }

    /// Bytes the registry sent through the front since the last reset.
    func egress() throws -> Int {
        let json = try Shell.check(["curl", "-sf", "http://127.0.0.1:\(statsPort)/"])
        return ((try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["bytes"] as? Int) ?? -1
    }

    func reset() throws { try Shell.check(["curl", "-sf", "http://127.0.0.1:\(statsPort)/reset"]) }

    deinit { stopProcess(process) }
}

/// Stops a helper process: SIGTERM, then SIGKILL if it is still running after `grace` seconds
/// (children of the test runner may inherit a signal mask that holds SIGTERM back).
func stopProcess(_ process: Process, grace: Double = 3) {
    guard process.isRunning else { return }
    process.terminate()
    let deadline = Date().addingTimeInterval(grace)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
}

/// One node of a test cluster: its own ferryd (fanotify backend, own state directory, socket and
/// mountpoint) serving peers on a loopback address of its own.
final class P2PNode {
    let name: String
    let address: String
    let daemon: DaemonProcess
    let mountpoint: String

    init(_ ws: Workspace, name: String, address: String?, peers: [String], image: P2PImage, extra: [String: Any] = [:]) throws {
        self.name = name
        self.address = address ?? "-"
        var config: [String: Any] = ["plain_http": [image.front.host]]
        if let address { config["peer_listen"] = address }
        if !peers.isEmpty { config["peers"] = peers }
        for (k, v) in extra { config[k] = v }
        let configPath = ws.sub("\(name).json")
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
        daemon = try DaemonProcess(workspace: ws, name: name, extraArguments: ["--config", configPath])
        mountpoint = ws.sub("\(name)-mnt")
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        try daemon.ferry(["mount", image.reference, mountpoint])
    }

    /// A process comparing every byte of `files` under the mount with the source tree (in the
    /// given order, pausing `pause` seconds between files). Exit status 0 means all equal.
    func reader(_ files: [String], tree: String, pause: Double = 0, log: String) throws -> Process {
        let script = files.map { "cmp '\(mountpoint)/\($0)' '\(tree)/\($0)' || exit 1" + (pause > 0 ? "; sleep \(pause)" : "") }
            .joined(separator: "\n")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        return p
    }

    /// The daemon's Prometheus metrics.
    func metrics() throws -> String {
        try Shell.check(["curl", "-sf", "--unix-socket", daemon.socket, "http://ferryd/metrics"])
    }

    /// Sum of the samples of `metric` whose labels contain `labelFilter` (all when empty).
    func metric(_ metric: String, labelFilter: String = "") throws -> Int {
        try metrics().split(separator: "\n").reduce(0) { sum, line in
            guard line.hasPrefix(metric + "{") || line.hasPrefix(metric + " "), labelFilter.isEmpty || line.contains(labelFilter),
                  let value = line.split(separator: " ").last.flatMap({ Int($0) }) else { return sum }
            return sum + value
        }
    }

    func unmount() { _ = try? daemon.ferry(["umount", mountpoint]) }
}

/// Starts `count` nodes on 127.0.0.(base+i) with one random port, each listing all of them as peers.
func startCluster(_ ws: Workspace, image: P2PImage, count: Int, extraPeers: [String] = []) throws -> [P2PNode] {
    let port = TestPorts.reserve()
    let addresses = (0..<count).map { "127.0.0.\(30 + $0):\(port)" }
    return try addresses.enumerated().map { i, address in
        try P2PNode(ws, name: "node\(i)", address: address, peers: addresses + extraPeers, image: image)
    }
}

/// Waits for all readers; returns the names of those that failed, with their output.
func waitForReaders(_ readers: [(String, Process, String)]) -> [String] {
    readers.compactMap { name, p, log in
        p.waitUntilExit()
        guard p.terminationStatus != 0 else { return nil }
        return "\(name): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")"
    }
}
