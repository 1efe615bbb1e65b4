import Daemon
import PeerSharing
import Foundation
import Testing

/// Peer sharing between real ferryd processes on one machine: each node its own ferryd
/// (fanotify backend, own state directory, socket and mountpoint) serving peers on a loopback
/// address of its own (127.0.0.30, .31, …), one real docker-registry behind a counting front
/// (Fixtures/counting_front.py) that measures the registry's egress.
@Suite(.serialized) struct P2PTests {
    static let tools = ["umoci", "python3", "docker-registry", "curl", "cmp", "tar"]

    /// Eight nodes read the whole image at the same time: every byte is right on every node,
    /// and the registry sends at most 1.25× the bytes of one node's full read (each chunk leaves
    /// the registry once, towards its home peer).
    @Test func eightNodesReadingAtOnceCostTheRegistryAboutOneRead() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace("p2p-eight")
        let image = try P2PImage(ws)

        // One full read by a node without peers: the yardstick.
        try image.front.reset()
        let solo = try P2PNode(ws, name: "solo", address: nil, peers: [], image: image)
        let soloLog = ws.sub("solo-reader.log")
        let soloFailures = waitForReaders([("solo", try solo.reader(image.files, tree: image.tree, log: soloLog), soloLog)])
        #expect(soloFailures.isEmpty, "\(soloFailures)")
        let oneRead = try image.front.egress()
        solo.unmount()
        solo.daemon.kill()

        try image.front.reset()
        let nodes = try startCluster(ws, image: image, count: 8)
        let readers = try nodes.map { node in
            let log = ws.sub("\(node.name)-reader.log")
            return (node.name, try node.reader(image.files.shuffled(), tree: image.tree, log: log), log)
        }
        let failures = waitForReaders(readers)
        #expect(failures.isEmpty, "wrong or failed reads:\n\(failures.joined(separator: "\n"))\n\(nodes[0].daemon.log.suffix(3000))")
        let egress = try image.front.egress()
        let served = try nodes.reduce(0) { $0 + (try $1.metric("ferry_peer_served_chunks_total")) }
        let homeFetches = try nodes.reduce(0) { $0 + (try $1.metric("ferry_peer_home_fetches_total")) }
        print("P2P: one full read = \(oneRead) B from the registry; 8 nodes with peers = \(egress) B "
              + "(\(String(format: "%.2f", Double(egress) / Double(max(1, oneRead))))×); chunks served by peers \(served), "
              + "fetched by homes \(homeFetches)")
        #expect(oneRead > 1_000_000)
        #expect(Double(egress) <= 1.25 * Double(oneRead), "registry egress \(egress) B > 1.25 × \(oneRead) B")
        #expect(served > 0, "peers served chunks")
        for node in nodes { node.unmount() }
    }

    /// A peer that flips a byte in every chunk it serves: every node rejects its bytes (counted
    /// in `ferry_peer_bad_chunks_total{peer=…}`), quarantines it and still reads every byte right.
    @Test func aPeerServingCorruptBytesIsDetectedAndCounted() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace("p2p-bad")
        let image = try P2PImage(ws)
        let port = TestPorts.reserve()
        let liar = "127.0.0.29:\(port)"
        let good = (0..<4).map { "127.0.0.\(30 + $0):\(port)" }
        // The liar relays a real peer (node0) and corrupts what it passes on.
        let corrupting = Process()
        corrupting.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        corrupting.arguments = [Build.fixture("corrupting_peer.py"), liar, good[0]]
        corrupting.standardOutput = FileHandle.nullDevice
        corrupting.standardError = FileHandle.nullDevice
        try corrupting.run()
        defer { stopProcess(corrupting, grace: 0) }

        let nodes = try good.enumerated().map { i, address in
            try P2PNode(ws, name: "node\(i)", address: address, peers: good + [liar], image: image)
        }
        let readers = try nodes.map { node in
            let log = ws.sub("\(node.name)-reader.log")
            return (node.name, try node.reader(image.files.shuffled(), tree: image.tree, log: log), log)
        }
        let failures = waitForReaders(readers)
        #expect(failures.isEmpty, "wrong or failed reads:\n\(failures.joined(separator: "\n"))")
        for node in nodes {
            let bad = try node.metric("ferry_peer_bad_chunks_total", labelFilter: "peer=\"\(liar)\"")
            let badOthers = try node.metric("ferry_peer_bad_chunks_total") - bad
            let text = try node.metrics()
            print("P2P: \(node.name) counted \(bad) corrupt chunks from \(liar)")
            #expect(bad >= 1, "\(node.name) did not count the corrupting peer:\n\(text)")
            #expect(badOthers == 0, "\(node.name) blamed an honest peer")
            #expect(try node.metric("ferry_peer_live", labelFilter: "peer=\"\(liar)\"") == 0, "the liar is quarantined")
        }
        #expect(nodes.contains { $0.daemon.log.contains("does not match its digest") })
        for node in nodes { node.unmount() }
    }

    /// Three of six nodes — together the home peers of about half the chunks — are SIGKILLed
    /// while the other three are in the middle of reading: the three finish, every byte right.
    @Test func killingTheHomePeersOfHalfTheChunksMidRunLosesNoRead() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace("p2p-kill")
        let image = try P2PImage(ws)
        let nodes = try startCluster(ws, image: image, count: 6)
        // Choose the three nodes whose share of home chunks is closest to one half.
        let digests = try image.chunkDigests().map { hex in (0..<32).map { UInt8(hex.utf8Hex(at: 2 * $0)) } }
        let addresses = nodes.map(\.address)
        var homed: [String: Int] = [:]
        for d in digests { homed[RendezvousHashing.home(addresses, digest: d) ?? "", default: 0] += 1 }
        var best: (Set<Int>, Int) = ([], Int.max)
        for a in 0..<6 { for b in (a + 1)..<6 { for c in (b + 1)..<6 {
            let share = [a, b, c].reduce(0) { $0 + homed[addresses[$1], default: 0] }
            if abs(2 * share - digests.count) < best.1 { best = ([a, b, c], abs(2 * share - digests.count)) }
        } } }
        let victims = best.0
        let victimShare = victims.reduce(0) { $0 + homed[addresses[$1], default: 0] }
        print("P2P: killing nodes \(victims.sorted()) = home of \(victimShare) of \(digests.count) chunks")

        let survivors = nodes.enumerated().filter { !victims.contains($0.offset) }.map(\.element)
        let readers = try survivors.map { node in
            let log = ws.sub("\(node.name)-reader.log")
            return (node.name, try node.reader(image.files.shuffled(), tree: image.tree, pause: 0.1, log: log), log)
        }
        usleep(500_000)
        for i in victims { nodes[i].daemon.kill() }
        let failures = waitForReaders(readers)
        #expect(failures.isEmpty, "wrong or failed reads:\n\(failures.joined(separator: "\n"))\n\(survivors[0].daemon.log.suffix(3000))")
        var failuresSeen = 0
        for node in survivors {
            for i in victims { failuresSeen += try node.metric("ferry_peer_failures_total", labelFilter: "peer=\"\(addresses[i])\"") }
        }
        print("P2P: survivors saw \(failuresSeen) failed requests to the killed peers and read everything")
        for node in survivors { node.unmount() }
    }

    /// Blob range reads through a real HTTP forward proxy (squid, standing in for dfdaemon):
    /// only blob GETs pass through it; when it goes down, reads fall back to the registry
    /// directly and none fails.
    @Test func proxyModeReadsThroughTheProxyAndFallsBackWhenItIsDown() throws {
        guard integrationPrerequisitesMet(tools: Self.tools + ["squid"]) else { return }
        let ws = try Workspace("p2p-proxy")
        let image = try P2PImage(ws, fileCount: 12)
        let squid = try Squid(ws)
        let node = try P2PNode(ws, name: "proxied", address: nil, peers: [], image: image,
                               extra: ["proxy": "http://127.0.0.1:\(squid.port)"])
        let half = image.files.count / 2
        let firstLog = ws.sub("first.log")
        var failures = waitForReaders([("first half", try node.reader(Array(image.files[..<half]), tree: image.tree, log: firstLog), firstLog)])
        #expect(failures.isEmpty, "\(failures)")
        let proxied = try node.metric("ferry_proxy_reads_total")
        #expect(proxied > 0, "blob reads went through the proxy")

        squid.stop()
        let lines = squid.accessLog.split(separator: "\n")
        #expect(!lines.isEmpty)
        for line in lines {
            #expect(line.contains("/blobs/sha256:") && line.contains(" GET "), "only blob GETs go through the proxy: \(line)")
        }
        let secondLog = ws.sub("second.log")
        failures = waitForReaders([("with the proxy down", try node.reader(image.files, tree: image.tree, log: secondLog), secondLog)])
        #expect(failures.isEmpty, "reads failed with the proxy down: \(failures)\n\(node.daemon.log.suffix(2000))")
        let fallbacks = try node.metric("ferry_proxy_fallbacks_total")
        print("P2P: \(proxied) blob reads through squid, \(fallbacks) direct after it stopped")
        #expect(fallbacks > 0)
        #expect(try node.metric("ferry_proxy_healthy") == 0)
        node.unmount()
    }
}

/// Debian's squid on loopback, no cache, allowing everything: a real HTTP forward proxy.
final class Squid {
    let process = Process()
    let port: Int
    let directory: String

    init(_ ws: Workspace) throws {
        port = TestPorts.reserve()
        directory = ws.sub("squid")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o777])
        // squid drops to the `proxy` user; its logs live in this world-writable directory.
        let config = """
            http_port 127.0.0.1:\(port)
            pid_filename \(directory)/squid.pid
            access_log stdio:\(directory)/access.log
            cache_log \(directory)/cache.log
            cache deny all
            cache_mem 8 MB
            http_access allow all
            shutdown_lifetime 0 seconds
            coredump_dir \(directory)
            """
        try config.write(toFile: "\(directory)/squid.conf", atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/squid")
        process.arguments = ["-N", "-f", "\(directory)/squid.conf"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<100 {
            if let r = try? Shell.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://127.0.0.1:\(port)",
                                       "http://127.0.0.1:1/"]), r.stdout == "503" { return }
            usleep(100_000)
        }
        throw Shell.Failure(command: "squid", status: -1, output: (try? String(contentsOfFile: "\(directory)/cache.log", encoding: .utf8)) ?? "")
    }

    var accessLog: String {
        ((try? String(contentsOfFile: "\(directory)/access.log", encoding: .utf8)) ?? "")
            .split(separator: "\n").filter { !$0.contains("http://127.0.0.1:1/") }.joined(separator: "\n")
    }

    func stop() { stopProcess(process, grace: 5) }

    deinit { stop() }
}

extension String {
    /// The byte value of the two hex digits at `offset`.
    func utf8Hex(at offset: Int) -> Int {
        let chars = Array(utf8)
        func nibble(_ c: UInt8) -> Int { c >= 0x61 ? Int(c) - 0x61 + 10 : c >= 0x41 ? Int(c) - 0x41 + 10 : Int(c) - 0x30 }
        return nibble(chars[offset]) << 4 | nibble(chars[offset + 1])
    }
}
