import Foundation
import Testing

/// Hostile clients on every port of a running ferryd (control socket, metrics port, peer port):
/// malformed requests and queries, 10,000 header bytes, a declared 1 GiB body, 2,000 idle
/// connections, slow-loris, early disconnects and resets, for 20 s. Meanwhile a reader reads a
/// lazily mounted image through ferryd and a checker asks `GET /health`: ferryd keeps serving
/// both, does not crash, and its memory stays bounded.
@Suite(.serialized) struct HostileClientTests {
    @Test func ferrydKeepsServingUnderHostileClients() throws {
        guard integrationPrerequisitesMet(tools: FanotifyDaemonTests.tools + ["python3"]) else { return }
        let ws = try Workspace("hostile")
        let (image, reference, _, registry) = try FanotifyDaemonTests.converted(ws, chunkSize: "16KiB")
        let metricsPort = TestPorts.reserve(2), peerPort = metricsPort + 1
        let config = ws.sub("ferryd.json")
        try Data(#"{"metrics_listen": "127.0.0.1:\#(metricsPort)", "peer_listen": "127.0.0.1:\#(peerPort)", "peers": ["127.0.0.2:\#(peerPort)"]}"#.utf8)
            .write(to: URL(fileURLWithPath: config))
        let daemon = try DaemonProcess(workspace: ws, extraArguments: ["--plain-http", registry.host, "--config", config])
        let mnt = try FanotifyDaemonTests.mountpoint(ws)
        try daemon.ferry(["mount", reference, mnt])
        defer { _ = try? daemon.ferry(["umount", mnt]) }

        let stop = AtomicFlag()
        let wrong = LockedStrings(), readStats = LockedStats(), healthStats = LockedStats()
        let files = try FileManager.default.subpathsOfDirectory(atPath: image.reference).filter { path in
            var isDirectory: ObjCBool = false
            let full = image.reference + "/" + path
            guard (try? FileManager.default.destinationOfSymbolicLink(atPath: full)) == nil,
                  FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue else { return false }
            return FileManager.default.isReadableFile(atPath: full) && !path.hasPrefix("dev/")
        }.sorted()
        let reader = Thread {
            var i = 0
            while !stop.isSet {
                let path = files[i % files.count]
                let started = Date()
                let got = FileManager.default.contents(atPath: mnt + "/" + path)
                readStats.add(Date().timeIntervalSince(started), failed: got == nil)
                if got != FileManager.default.contents(atPath: image.reference + "/" + path) { wrong.append(path) }
                i += 1
                usleep(20_000)
            }
        }
        let socket = daemon.socket
        reader.start()
        let health = healthLoop(socket: socket, stats: healthStats, until: stop, pause: 100_000)
        let attack = try Shell.run(["python3", Build.fixture("hostile_clients.py"), "20", "2000",
                                    "unix:\(daemon.socket)", "tcp:127.0.0.1:\(metricsPort)", "tcp:127.0.0.1:\(peerPort)"])
        stop.set()
        while reader.isExecuting || health.isExecuting { usleep(10_000) }

        let status = (try? String(contentsOfFile: "/proc/\(daemon.process.processIdentifier)/status", encoding: .utf8)) ?? ""
        let peakKiB = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
            .flatMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first }.flatMap { Int($0) } ?? -1
        print("hostile clients: \(attack.stdout.trimmingCharacters(in: .whitespacesAndNewlines)); reader \(readStats.count) reads, "
              + "longest \(Int(readStats.longest * 1000)) ms; /health \(healthStats.count) checks, slowest \(Int(healthStats.longest * 1000)) ms, "
              + "\(healthStats.failures) failed; ferryd peak RSS \(peakKiB / 1024) MiB")
        #expect(attack.status == 0, "\(attack.stderr)")
        #expect(daemon.process.isRunning, "ferryd died:\n\(daemon.log.suffix(3000))")
        #expect(wrong.values.isEmpty, "wrong bytes: \(wrong.values)")
        #expect(readStats.count > 0 && readStats.failures == 0, "\(readStats.failures) failed reads")
        #expect(healthStats.count > 0 && healthStats.failures == 0, "GET /health failed \(healthStats.failures) of \(healthStats.count): \(healthStats.failureReasons)")
        #expect(peakKiB > 0 && peakKiB < 512 * 1024, "peak RSS \(peakKiB) KiB")
        // Still answering afterwards, on every port.
        #expect(try Shell.run(["curl", "-sf", "--max-time", "30", "http://127.0.0.1:\(metricsPort)/metrics"]).status == 0)
        #expect(try Shell.run(["curl", "-sf", "--max-time", "30", "--unix-socket", socket, "http://ferryd/health"]).status == 0)
    }

    /// The peer port serves only the addresses in the peer list: a connection from any other
    /// address is closed before anything is read or sent (curl: empty reply), and the refusal is
    /// counted; a listed peer is answered. Before, any host that connected was served.
    @Test func thePeerPortAnswersOnlyListedPeers() throws {
        guard integrationPrerequisitesMet(tools: ["curl"]) else { return }
        let ws = try Workspace("peer-allow")
        let port = TestPorts.reserve(2), metricsPort = port + 1
        let config = ws.sub("ferryd.json")
        try Data(#"{"peer_listen": "127.0.0.5:\#(port)", "peers": ["127.0.0.6:\#(port)"], "metrics_listen": "127.0.0.1:\#(metricsPort)"}"#.utf8)
            .write(to: URL(fileURLWithPath: config))
        let daemon = try DaemonProcess(workspace: ws, extraArguments: ["--config", config])
        let url = "http://127.0.0.5:\(port)/health"
        let stranger = try Shell.run(["curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "--interface", "127.0.0.7", url])
        #expect(stranger.status == 52 || stranger.status == 56, "a stranger gets no answer at all (curl exit \(stranger.status), status \(stranger.stdout))")
        let defaultSource = try Shell.run(["curl", "-s", "--max-time", "5", "-o", "/dev/null", url])
        #expect(defaultSource.status != 0, "127.0.0.1 is not a listed peer either")
        let peer = try Shell.run(["curl", "-sf", "--max-time", "5", "--interface", "127.0.0.6", url])
        #expect(peer.status == 0 && peer.stdout.contains("ok"), "a listed peer is answered: \(peer.stdout) \(peer.stderr)")
        let metrics = try Shell.check(["curl", "-sf", "http://127.0.0.1:\(metricsPort)/metrics"])
        #expect(metrics.contains("ferry_peer_served_refused_addresses_total 2"), "\(metrics.split(separator: "\n").filter { $0.contains("refused") })")
        #expect(daemon.process.isRunning)
    }
}
