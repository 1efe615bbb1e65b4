import FerrySystem
import Foundation
import Testing

/// Cache limits, `ferry gc`, a full disk, and what `ferry status` and the metrics show, on a
/// real ferryd with the fanotify backend.
@Suite(.serialized) struct ServiceCacheTests {
    static let tools = ["umoci", "tar", "mount", "curl"]

    static func readAll(_ image: SmallServiceImage, at mnt: String) throws {
        for (name, expected) in image.files {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(mnt)/\(name)"))
            #expect(Array(bytes) == expected, "\(name) differs")
        }
    }

    static func cacheState(_ daemon: DaemonProcess) throws -> [String: Any] {
        let out = try Shell.check(["curl", "-sf", "--unix-socket", daemon.socket, "http://ferryd/cache"])
        return (try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]) ?? [:]
    }

    @Test func gcEvictsTheUnmountedImage_keepsTheMountedOne_andBytesStayCorrect() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace("svc-gc")
        let first = try SmallServiceImage(ws, name: "first")
        let second = try SmallServiceImage(ws, name: "second")
        // Each image: 4.25 MiB of random data = about 4.3 MiB of cache file plus as much in the store.
        let limit = 12 << 20
        let daemon = try DaemonProcess(workspace: ws, extraArguments: ["--cache-limit", "12M"])
        let mntA = ws.sub("a"), mntB = ws.sub("b")
        for m in [mntA, mntB] { try FileManager.default.createDirectory(atPath: m, withIntermediateDirectories: true) }
        try daemon.ferry(["mount", first.reference, mntA])
        try Self.readAll(first, at: mntA)
        try daemon.ferry(["umount", mntA])
        try daemon.ferry(["mount", second.reference, mntB])
        defer { _ = try? Shell.run(["umount", "-l", mntB]) }
        try Self.readAll(second, at: mntB)
        let before = try Self.cacheState(daemon)
        let usedBefore = (before["storeBytes"] as? Int ?? 0) + (before["blobCacheBytes"] as? Int ?? 0)
        #expect(usedBefore > limit, "both images are cached before gc (\(usedBefore) bytes)")

        let out = try daemon.ferry(["gc"])
        #expect(out.contains("evicted"), "\(out)")
        let after = try Self.cacheState(daemon)
        let usedAfter = (after["storeBytes"] as? Int ?? 0) + (after["blobCacheBytes"] as? Int ?? 0)
        #expect(usedAfter <= limit, "gc brought the cache under the limit: \(usedAfter) > \(limit)\n\(out)")
        let cacheFiles = try FileManager.default.contentsOfDirectory(atPath: daemon.stateDirectory + "/cache").filter { $0.hasSuffix(".blob") }
        #expect(cacheFiles.count == 1, "only the mounted image's cache file is left: \(cacheFiles)")
        // The mounted image is untouched and still reads right (its pages dropped first).
        _ = try? Shell.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"])
        try Self.readAll(second, at: mntB)
        // The evicted image mounts again, cold, and every byte is right.
        try daemon.ferry(["mount", first.reference, mntA])
        defer { _ = try? Shell.run(["umount", "-l", mntA]) }
        try Self.readAll(first, at: mntA)
        let figures = try daemon.images().first { ($0["mountpoints"] as? [String]) == [mntA] }
        #expect((figures?["bytesFetched"] as? Int ?? 0) > 0, "the evicted image was fetched again")
    }

    @Test func aFullStoreDiskStopsStoringOnce_readsGoOnCorrect() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace("svc-full")
        let image = try SmallServiceImage(ws)
        // The chunk store alone on a 512 KiB tmpfs: it fills after a few chunks; cache files are elsewhere.
        let store = ws.sub("ferryd-state/store")
        try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
        try Shell.check(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", store])
        defer { _ = try? Shell.run(["umount", "-l", store]) }
        let daemon = try DaemonProcess(workspace: ws)
        let mnt = ws.sub("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try daemon.ferry(["mount", image.reference, mnt])
        defer { _ = try? Shell.run(["umount", "-l", mnt]) }
        try Self.readAll(image, at: mnt)
        #expect(try Self.cacheState(daemon)["storeWritesSuspended"] as? Bool == true)
        let metrics = try Shell.check(["curl", "-sf", "--unix-socket", daemon.socket, "http://ferryd/metrics"])
        #expect(metrics.contains("ferry_store_writes_suspended 1"))
        usleep(10_500_000)  // the periodic check logs the full disk
        #expect(daemon.log.components(separatedBy: "disk full: the chunk store stopped storing chunks").count - 1 == 1,
                "logged exactly once:\n\(daemon.log.suffix(2000))")
    }

    @Test func metricsOverTCP_statusTable_andWatch() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let ws = try Workspace("svc-metrics")
        let image = try SmallServiceImage(ws)
        let port = TestPorts.reserve()
        let daemon = try DaemonProcess(workspace: ws, extraArguments: ["--metrics-listen", "127.0.0.1:\(port)", "--cache-limit", "1G"])
        let mnt = ws.sub("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try daemon.ferry(["mount", image.reference, mnt])
        defer { _ = try? Shell.run(["umount", "-l", mnt]) }
        try Self.readAll(image, at: mnt)

        let text = try Shell.check(["curl", "-sf", "http://127.0.0.1:\(port)/metrics"])
        func value(_ series: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect((value(#"ferry_requests_total{backend="fanotify",result="ok"}"#) ?? 0) > 0, "\(text)")
        #expect((value(#"ferry_fill_duration_seconds_count{backend="fanotify"}"#) ?? 0) > 0)
        #expect(value(#"ferry_fill_duration_seconds_bucket{backend="fanotify",le="+Inf"}"#) == value(#"ferry_fill_duration_seconds_count{backend="fanotify"}"#))
        #expect(value(#"ferry_fills_in_flight{backend="fanotify"}"#) == 0)
        #expect((value(#"ferry_cache_bytes{kind="blob_cache"}"#) ?? 0) > 4_000_000)
        #expect(value("ferry_cache_limit_bytes") == Double(1 << 30))
        #expect(value("ferry_cache_hit_ratio") != nil)
        #expect(text.contains("ferry_bytes_fetched_total{image="))
        let other = try Shell.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/images"])
        #expect(other.stdout == "404", "only /metrics over TCP")

        let table = try daemon.ferry(["status"])
        let id = try #require(try daemon.images().first?["id"] as? String)
        #expect(table.contains("backend fanotify, 1 image(s), 1 mount(s)"), "\(table)")
        #expect(table.contains("of 1.0 GiB limit"), "\(table)")
        #expect(table.contains(String(id.prefix(12))) && table.contains(mnt) && table.contains("4.2 MiB"), "\(table)")
        let watch = try Shell.run(["timeout", "2.5", Build.ferry, "status", "--watch", "--interval", "0.5", "--socket", daemon.socket])
        #expect(watch.stdout.components(separatedBy: "\u{1B}[2J").count - 1 >= 3, "redraws: \(watch.stdout.prefix(500))")
        #expect(watch.stdout.contains("READ/s"), "rates after the first redraw")
    }
}
