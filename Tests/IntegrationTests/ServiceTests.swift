import FerrySystem
import Foundation
import Testing

/// ferryd as a service: the notification protocol against a stand-in for systemd, the
/// descriptor store across restarts, the unit file, and restarts under continuous readers.
@Suite(.serialized) struct ServiceTests {
    static let tools = ["umoci", "tar", "mount"]

    @Test func readyComesAfterTheGroupIsStoredAndTheSocketListens_watchdogPings_statusFollowsMounts() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace("svc-notify")
        let image = try SmallServiceImage(ws)
        let manager = try ServiceManagerStandIn(workspace: ws, watchdogMicroseconds: 200_000)
        try manager.start()
        // At READY=1 the control socket already answers.
        let status = try Shell.run([Build.ferry, "status", "--socket", manager.socket])
        #expect(status.status == 0, "control socket not listening at READY=1: \(status.stderr)")

        let messages = manager.received
        let storeIndex = try #require(messages.firstIndex { $0.assignments.contains("FDSTORE=1") }, "no FDSTORE=1:\n\(manager.log)")
        let readyIndex = try #require(messages.firstIndex { $0.assignments.contains("READY=1") })
        #expect(storeIndex < readyIndex, "the group is stored before READY=1")
        let store = messages[storeIndex]
        #expect(store.assignments.contains("FDNAME=fanotify-group"))
        #expect(store.descriptors.count == 1, "exactly one descriptor with FDSTORE")
        let fd = try #require(manager.stored.first { $0.name == "fanotify-group" }?.fd)
        #expect(try fd.procLink() == "anon_inode:[fanotify]", "the stored descriptor is a fanotify group")
        #expect(messages[readyIndex].assignments.contains { $0.hasPrefix("STATUS=serving 0 mount(s)") }, "\(messages[readyIndex].assignments)")
        #expect(!FileManager.default.fileExists(atPath: manager.stateDirectory + "/fanotify-group.sock"),
                "under a service manager no holder process is started")

        // WATCHDOG=1 every half interval (100 ms) while the loop turns.
        usleep(1_000_000)
        let pings = manager.received.filter { $0.assignments.contains("WATCHDOG=1") }.count
        #expect(pings >= 4, "got \(pings) WATCHDOG=1 in about a second with WATCHDOG_USEC=200000")

        let mnt = ws.sub("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try manager.ferry(["mount", image.reference, mnt])
        defer { _ = try? Shell.run(["umount", "-l", mnt]) }
        usleep(400_000)
        #expect(manager.received.contains { $0.assignments.contains("STATUS=serving 1 mount(s) of 1 image(s) with fanotify") },
                "STATUS follows the mounts: \(manager.received.flatMap(\.assignments).filter { $0.hasPrefix("STATUS") })")
        let firstHalf = try Data(contentsOf: URL(fileURLWithPath: mnt + "/a.bin"))
        #expect(Array(firstHalf) == image.files["a.bin"])
        let mountBefore = mountID(of: mnt)

        // Killed: the store keeps the group; the next ferryd gets it as LISTEN_FDS fd 3.
        manager.stop(signal: SIGKILL)
        try manager.start()
        #expect(manager.log.contains("took over the fanotify group from the service manager's descriptor store"), "\(manager.log.suffix(2000))")
        #expect(manager.log.contains("re-attached mount of a previous ferryd"))
        #expect(mountID(of: mnt) == mountBefore && mountBefore != nil, "the mount was never unmounted")
        for name in SmallServiceImage.readFiles + ["never-read.bin"] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(mnt)/\(name)"))
            #expect(Array(bytes) == image.files[name], "\(name) differs after the restart")
        }
        // Graceful stop announces itself.
        manager.stop(signal: SIGTERM)
        #expect(manager.received.contains { $0.assignments.contains("STOPPING=1") })
    }

    @Test func theUnitFileVerifiesAndInstallServiceWritesIt() throws {
        guard integrationPrerequisitesMet(tools: ["systemd-analyze"], root: false) else { return }
        let ws = try Workspace("svc-unit")
        let printed = try Shell.check([Build.ferry, "install-service", "--print", "--ferryd", Build.ferryd])
        let shipped = try String(contentsOfFile: Build.packageRoot + "/Tools/systemd/ferryd.service", encoding: .utf8)
        #expect(printed == shipped.replacingOccurrences(of: "ExecStart=/usr/local/bin/ferryd", with: "ExecStart=\(Build.ferryd)"),
                "ferry install-service embeds Tools/systemd/ferryd.service byte for byte")
        let out = try Shell.check([Build.ferry, "install-service", "--unit-directory", ws.path, "--ferryd", Build.ferryd, "--no-reload"])
        #expect(out.contains("wrote \(ws.path)/ferryd.service"))
        let verify = try Shell.run(["systemd-analyze", "verify", ws.path + "/ferryd.service"])
        #expect(verify.status == 0 && verify.stderr.isEmpty && verify.stdout.isEmpty, "systemd-analyze verify: \(verify.stdout)\(verify.stderr)")
    }

    /// Readers read every byte of a mounted image over and over while ferryd is killed with
    /// SIGKILL 10 times and stopped with SIGTERM and started again 10 times (an upgrade; the
    /// same binary is started again, which is what an upgrade looks like to the kernel).
    /// No wrong byte ever; no failed read outside the window around a SIGKILL (requests the killed
    /// ferryd had read are answered EIO by its successor) and none at all around a SIGTERM; the
    /// mount is never unmounted. Prints how long reads stalled.
    @Test(arguments: [true, false])
    func restartsUnderContinuousReaders(underServiceManager: Bool) throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace(underServiceManager ? "svc-restarts" : "svc-restarts-holder")
        let image = try SmallServiceImage(ws)
        let manager = try ServiceManagerStandIn(workspace: ws, actsAsServiceManager: underServiceManager, watchdogMicroseconds: 2_000_000)
        try manager.start()
        let mnt = ws.sub("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try manager.ferry(["mount", image.reference, mnt])
        defer { _ = try? Shell.run(["umount", "-l", mnt]) }
        let mount = mountID(of: mnt)
        let readers = ContinuousReaders(mountpoint: mnt, files: image.files, names: SmallServiceImage.readFiles)
        usleep(300_000)

        var windows: [(signal: Int32, stopped: Date, ready: Date)] = []
        for round in 0..<20 {
            let signal = round < 10 ? SIGKILL : SIGTERM
            let stopped = Date()
            manager.stop(signal: signal)
            usleep(50_000)  // readers meet no ferryd for a moment
            let ready = try manager.start()
            windows.append((signal, stopped, ready))
            #expect(mountID(of: mnt) == mount, "round \(round): the mount changed")
            usleep(250_000)  // readers go on with the new ferryd
        }
        readers.stop()
        let result = readers.snapshot
        // The readers really went through ferryd (not only the page cache): the last ferryd alone was asked for bytes.
        let figures = try JSONSerialization.jsonObject(with: Data(try manager.ferry(["status", "--json"]).utf8)) as? [[String: Any]]
        #expect((figures?.first?["bytesRequested"] as? Int ?? 0) > 0, "reads after the last restart reached ferryd")
        #expect(result.wrongBytes == 0, "WRONG BYTES: \(result.wrongBytes)")
        #expect(mount != nil && mountID(of: mnt) == mount, "the mount was never unmounted")
        #expect(result.passes > 20, "readers made progress (\(result.passes) passes)")
        func window(of date: Date) -> Int? {
            windows.firstIndex { date >= $0.stopped && date <= $0.ready.addingTimeInterval(0.5) }
        }
        var failuresInKillWindows = 0
        for failure in result.failures {
            guard let w = window(of: failure.at) else {
                Issue.record("a read failed outside every restart window: \(failure.file): \(failure.error)")
                continue
            }
            if windows[w].signal == SIGKILL {
                failuresInKillWindows += 1
                #expect(failure.error.contains("Input/output error"), "\(failure.error)")
            } else {
                Issue.record("a read failed around a SIGTERM restart: \(failure.file): \(failure.error)")
            }
        }
        // Stall: the longest single 64 KiB read that ended in each restart window.
        func stalls(_ signal: Int32) -> [Double] {
            windows.filter { $0.signal == signal }.map { w in
                result.slowReads.filter { $0.end >= w.stopped && $0.end <= w.ready.addingTimeInterval(0.5) }.map(\.seconds).max() ?? 0
            }
        }
        func describe(_ s: [Double]) -> String {
            String(format: "max %.0f ms, median %.0f ms", (s.max() ?? 0) * 1000, (s.sorted()[s.count / 2]) * 1000)
        }
        let restartTimes = windows.map { $0.ready.timeIntervalSince($0.stopped) }
        print("""
            restarts \(underServiceManager ? "under the service-manager stand-in (fd store, LISTEN_FDS)" : "by hand (group holder process)"): \
            \(result.passes) full passes, 0 wrong bytes expected, \(result.wrongBytes) found; \
            failed reads in SIGKILL windows \(failuresInKillWindows), elsewhere \(result.failures.count - failuresInKillWindows); \
            read stall SIGKILL: \(describe(stalls(SIGKILL))), SIGTERM: \(describe(stalls(SIGTERM))); \
            stop→ready \(String(format: "%.0f", (restartTimes.max() ?? 0) * 1000)) ms max
            """)
        if !result.failures.isEmpty || result.wrongBytes > 0 { print(manager.log.suffix(4000)) }
    }
}
