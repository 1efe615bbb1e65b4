import Foundation
import Testing

/// Many `ferry mount` requests at the same moment against one ferryd (fanotify backend, a real
/// registry on 127.0.0.1), while a mount made before is being read. On a two-core machine the
/// old mount path blocked Swift's cooperative threads (a semaphore wait for a download, a lock
/// around the whole mount) and two simultaneous mounts hung ferryd for good; every `ferry mount`
/// here runs under `timeout`, so a hang is a failure, not a stuck test run.
@Suite(.serialized) struct ConcurrentMountTests {
    static let tools = ["umoci", "tar", "docker-registry", "curl", "python3", "timeout"]

    /// Sixteen mounts (eight images, two mountpoints each) at once: all succeed, every byte read
    /// from them and from the earlier mount is right, `GET /health` answers within a second
    /// throughout, and each image's bootstrap is downloaded once although two mounts asked.
    @Test func sixteenSimultaneousMountsOfEightImagesAllSucceed() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let storm = try MountStorm(name: "conc-mounts", bootstrapDelay: 0)
        let outcome = try storm.run()
        print("concurrent mounts (no delay): 16 mounts in \(String(format: "%.2f", outcome.seconds)) s; "
              + "reader's longest stall \(outcome.longestReadMs) ms over \(outcome.reads) reads; "
              + "slowest GET /health \(outcome.slowestHealthMs) ms over \(outcome.healthChecks) checks")
        outcome.expectAllGood(storm)
    }

    /// The same with every whole-blob download (the bootstraps) answered 2 s late by a proxy in
    /// front of the registry: the reader of the earlier mount, whose fills are ranged reads that
    /// the proxy passes at once, is not held up by the slow mounts.
    @Test func slowBootstrapDownloadsDoNotHoldUpReadsOfOtherMounts() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let storm = try MountStorm(name: "conc-slow", bootstrapDelay: 2)
        let outcome = try storm.run()
        print("concurrent mounts (bootstraps 2 s late): 16 mounts in \(String(format: "%.2f", outcome.seconds)) s; "
              + "reader's longest stall \(outcome.longestReadMs) ms over \(outcome.reads) reads; "
              + "slowest GET /health \(outcome.slowestHealthMs) ms over \(outcome.healthChecks) checks")
        outcome.expectAllGood(storm)
        #expect(outcome.seconds >= 2, "the proxy did hold the bootstraps back (\(outcome.seconds) s)")
        // The delayed downloads overlapped: sixteen one-after-the-other would take 16 s or more.
        #expect(outcome.seconds < 12, "mounts waited for each other's downloads: \(outcome.seconds) s")
    }

    /// Four large images (each 30,000 files, a bootstrap of several MB, and a 24 MiB file) mounted
    /// at once while the earlier mount is read: downloading and checking their bootstraps and
    /// attaching their blobs never holds up the reader's fills for a second.
    @Test func fourLargeImagesMountedAtOnceDoNotStallAReader() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let storm = try MountStorm(name: "conc-large", bootstrapDelay: 0, shape: .large)
        let outcome = try storm.run()
        print("concurrent mounts (4 large images, \(storm.bootstrapBytes / 1_000_000) MB of bootstraps): 4 mounts in "
              + "\(String(format: "%.2f", outcome.seconds)) s; reader's longest stall \(outcome.longestReadMs) ms over \(outcome.reads) reads; "
              + "slowest GET /health \(outcome.slowestHealthMs) ms over \(outcome.healthChecks) checks")
        outcome.expectAllGood(storm)
    }
}

/// One run of the scenario: images made and pushed, ferryd started, a reader mount made, then
/// the shape's mounts (sixteen by default) fired at once while a reader and a health checker run.
final class MountStorm {
    let workspace: Workspace
    let registry: LocalRegistry
    let front: DelayingProxy?
    let daemon: DaemonProcess
    /// Host the images are pulled from (the proxy when there is one).
    let pullHost: String
    /// Per image: its files (relative path → bytes).
    var imageFiles: [[String: Data]] = []
    let readerFiles: [String: Data]
    let readerMount: String

    /// What the mounted images look like and how many mounts each gets.
    struct Shape {
        var images: Int
        var mountsPerImage: Int
        /// Files of image `i`.
        var files: (Int) -> [String: Data]
        /// The files whose every byte is compared after the storm (each first read of a small
        /// file is a registry range request: tens of thousands would take minutes).
        var checked: (String) -> Bool = { _ in true }
        /// Eight small images of six incompressible files, two mounts each.
        static var small: Shape { Shape(images: 8, mountsPerImage: 2) { i in
            var files: [String: Data] = [:]
            for j in 0..<6 { files["data/file-\(j)"] = MountStorm.noise(seed: UInt64(i * 1000 + j), count: 96 * 1024 + j * 517) }
            files["etc/image-name"] = Data("image \(i)\n".utf8)
            return files
        } }
        /// Four large images, one mount each: 30,000 small files in 200 directories (a bootstrap of
        /// several MB) and one 24 MiB file; checked: the 24 MiB file, and every 300th small file.
        static var large: Shape { Shape(images: 4, mountsPerImage: 1, files: { i in
            var files: [String: Data] = [:]
            for j in 0..<30_000 { files["d\(j % 200)/f\(j)"] = Data("image \(i) file \(j)\n".utf8) }
            files["big/blob"] = MountStorm.noise(seed: UInt64(70_000 + i), count: 24 << 20)
            files["etc/image-name"] = Data("image \(i)\n".utf8)
            return files
        }, checked: { name in !name.hasPrefix("d") || (Int(name.split(separator: "f").last ?? "") ?? 0) % 300 == 0 }) }
    }
    let shape: Shape
    /// Bytes of the mounted images' bootstrap layers.
    var bootstrapBytes = 0

    init(name: String, bootstrapDelay: Double, shape: Shape = .small) throws {
        self.shape = shape
        workspace = try Workspace(name)
        registry = try LocalRegistry(workspace: workspace)
        if bootstrapDelay > 0 {
            let proxy = try DelayingProxy(upstream: registry.host, delay: bootstrapDelay, log: workspace.sub("held.log"))
            front = proxy
            pullHost = proxy.host
        } else {
            front = nil
            pullHost = registry.host
        }
        // Distinct, incompressible contents per image, so no chunk is shared between images.
        for i in 0..<shape.images {
            let files = shape.files(i)
            bootstrapBytes += try Self.publish(files, name: "img\(i)", workspace: workspace, registry: registry.host)
            imageFiles.append(files)
        }
        // The reader's image: many files of one chunk each, so each first read is a fill.
        var reader: [String: Data] = [:]
        for j in 0..<160 { reader["r/\(j)"] = Self.noise(seed: UInt64(900_000 + j), count: 40 * 1024 + j) }
        readerFiles = reader
        try Self.publish(reader, name: "reader", workspace: workspace, registry: registry.host)
        daemon = try DaemonProcess(workspace: workspace, extraArguments: ["--plain-http", registry.host]
                                   + (front.map { ["--plain-http", $0.host] } ?? []))
        readerMount = workspace.sub("reader-mnt")
        try FileManager.default.createDirectory(atPath: readerMount, withIntermediateDirectories: true)
        try daemon.ferry(["mount", "docker://\(pullHost)/reader:ferry", readerMount])
    }

    /// Deterministic incompressible bytes.
    static func noise(seed: UInt64, count: Int) -> Data {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var out = Data(count: count)
        for k in 0..<count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            out[k] = UInt8(truncatingIfNeeded: state >> 24)
        }
        return out
    }

    /// Writes `files` as one layer of an OCI image (umoci), converts it with 32 KiB chunks and
    /// pushes it as `<registry>/<name>:ferry`. Returns the size of its bootstrap layer.
    @discardableResult
    static func publish(_ files: [String: Data], name: String, workspace: Workspace, registry: String) throws -> Int {
        let tree = workspace.sub("\(name)-tree")
        for (path, data) in files {
            let full = tree + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try data.write(to: URL(fileURLWithPath: full))
        }
        let tar = workspace.sub("\(name).tar")
        try Shell.check(["tar", "-cf", tar, "-C", tree, "--owner=0", "--group=0", "."])
        let source = workspace.sub("\(name)-oci")
        try Shell.check(["umoci", "init", "--layout", source])
        try Shell.check(["umoci", "new", "--image", "\(source):t"])
        try Shell.check(["umoci", "raw", "add-layer", "--no-history", "--image", "\(source):t", tar])
        let converted = workspace.sub("\(name)-ferry")
        try Shell.check([Build.ferry, "convert", "oci:\(source):t", "oci:\(converted):t", "--chunk-size", "32KiB"])
        try Shell.check([Build.ferry, "push", "oci:\(converted):t", "docker://\(registry)/\(name):ferry", "--plain-http", registry])
        let blobs = converted + "/blobs/sha256"
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: converted + "/index.json"))) as? [String: Any]
        let manifestDigest = ((index?["manifests"] as? [[String: Any]])?.first?["digest"] as? String ?? "").dropFirst(7)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(blobs)/\(manifestDigest)"))) as? [String: Any]
        let layers = manifest?["layers"] as? [[String: Any]] ?? []
        return layers.filter { ($0["mediaType"] as? String ?? "").contains("bootstrap") }.reduce(0) { $0 + ($1["size"] as? Int ?? 0) }
    }

    struct Outcome {
        var seconds: Double
        var mountFailures: [String]
        var wrongBytes: [String]
        var reads: Int
        var longestReadMs: Int
        var healthChecks: Int
        var slowestHealthMs: Int
        var healthFailures: Int
        /// Whole-blob downloads the proxy held, by path (nil without a proxy).
        var heldDownloads: [String: Int]?

        func expectAllGood(_ storm: MountStorm) {
            #expect(mountFailures.isEmpty, "mounts failed:\n\(mountFailures.joined(separator: "\n"))\n\(storm.daemon.log.suffix(4000))")
            #expect(wrongBytes.isEmpty, "wrong bytes: \(wrongBytes)")
            #expect(reads > 0, "the reader read something while the mounts ran")
            #expect(healthChecks > 0 && healthFailures == 0, "GET /health failed \(healthFailures) of \(healthChecks) times")
            #expect(slowestHealthMs < 1000, "GET /health took \(slowestHealthMs) ms at worst")
            #expect(longestReadMs < 1000, "the reader of the earlier mount stalled \(longestReadMs) ms")
            if let held = heldDownloads {
                // Eight images' bootstraps and configs pass through whole-blob GETs; two mounts of
                // one image share one download, so no path is fetched twice.
                #expect(!held.isEmpty && held.values.allSatisfy { $0 == 1 }, "whole-blob downloads: \(held)")
            }
        }
    }

    func run() throws -> Outcome {
        let stop = AtomicFlag()
        let readerStats = LockedStats(), healthStats = LockedStats()
        let wrong = LockedStrings()
        let readerFiles = self.readerFiles, readerMount = self.readerMount
        // The reader: each file of the earlier mount once (a fill each), then again from the page cache.
        let reader = Thread {
            let names = readerFiles.keys.sorted()
            var index = 0
            while !stop.isSet {
                let name = names[index % names.count]
                let started = Date()
                let data = FileManager.default.contents(atPath: readerMount + "/" + name)
                readerStats.add(Date().timeIntervalSince(started))
                if data != readerFiles[name] { wrong.append("reader \(name)") }
                index += 1
                usleep(10_000)
            }
        }
        let socket = daemon.socket
        let health = healthLoop(socket: socket, stats: healthStats, until: stop, pause: 50_000)
        reader.start()
        usleep(200_000)

        // The mounts, fired together.
        let failures = LockedStrings()
        var mountpoints: [(image: Int, path: String)] = []
        for i in 0..<shape.images {
            for copy in 0..<shape.mountsPerImage {
                let path = workspace.sub("m\(i)-\(copy)")
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
                mountpoints.append((i, path))
            }
        }
        let group = DispatchGroup()
        let started = Date()
        for (image, path) in mountpoints {
            group.enter()
            let reference = "docker://\(pullHost)/img\(image):ferry"
            Thread {
                defer { group.leave() }
                let r = try? Shell.run(["timeout", "90", Build.ferry, "mount", reference, path, "--socket", socket])
                if r?.status != 0 { failures.append("\(path): status \(r?.status ?? -1) \(r?.stderr ?? "")") }
            }.start()
        }
        group.wait()
        let seconds = Date().timeIntervalSince(started)
        usleep(300_000)
        stop.set()
        // A ferryd that stopped serving leaves the reader blocked in read(2) for good: give the
        // checkers 30 s, then call it a failure and end ferryd and its group holder, which
        // releases the reader (EIO) so the test ends.
        var stuck: [String] = []
        let deadline = Date().addingTimeInterval(30)
        while (reader.isExecuting || health.isExecuting) && Date() < deadline { usleep(10_000) }
        if reader.isExecuting || health.isExecuting {
            stuck.append("reader or health checker still blocked 30 s after the mounts ended: ferryd stopped serving")
            daemon.kill()
            _ = try? Shell.run(["pkill", "-9", "-f", "hold-group --socket \(daemon.stateDirectory)/"])
            while reader.isExecuting || health.isExecuting { usleep(10_000) }
            return Outcome(seconds: seconds, mountFailures: failures.values + stuck, wrongBytes: wrong.values,
                           reads: readerStats.count, longestReadMs: Int(readerStats.longest * 1000),
                           healthChecks: healthStats.count, slowestHealthMs: Int(healthStats.longest * 1000),
                           healthFailures: healthStats.failures, heldDownloads: nil)
        }

        // Every checked file of every new mount, every byte.
        for (image, path) in mountpoints where !failures.values.contains(where: { $0.hasPrefix(path + ":") }) {
            for (name, want) in imageFiles[image] where shape.checked(name) && FileManager.default.contents(atPath: path + "/" + name) != want {
                wrong.append("\(path)/\(name)")
            }
        }
        for (_, path) in mountpoints { _ = try? daemon.ferry(["umount", path]) }
        _ = try? daemon.ferry(["umount", readerMount])

        let held = front.map { proxy -> [String: Int] in
            let lines = ((try? String(contentsOfFile: proxy.log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            return Dictionary(lines.map { ($0, 1) }, uniquingKeysWith: +)
        }
        return Outcome(seconds: seconds, mountFailures: failures.values, wrongBytes: wrong.values,
                       reads: readerStats.count, longestReadMs: Int(readerStats.longest * 1000),
                       healthChecks: healthStats.count, slowestHealthMs: Int(healthStats.longest * 1000),
                       healthFailures: healthStats.failures, heldDownloads: held)
    }
}

/// Fixtures/delaying_proxy.py: a registry front that holds whole-blob downloads back.
final class DelayingProxy {
    let process = Process()
    let port: Int
    let log: String
    var host: String { "127.0.0.1:\(port)" }

    /// - Parameter rangedDelay: seconds every ranged blob GET (a chunk fill) is held too.
    init(upstream: String, delay: Double, log: String, rangedDelay: Double = 0) throws {
        self.log = log
        port = TestPorts.reserve()
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [Build.fixture("delaying_proxy.py"), String(port), upstream, String(delay), log, String(rangedDelay)]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<600 {
            if (try? Shell.run(["curl", "-sf", "http://\(host)/v2/"]))?.status == 0 { return }
            usleep(50_000)
        }
        throw Shell.Failure(command: "delaying_proxy.py", status: -1, output: "did not answer on \(host)")
    }

    deinit { stopProcess(process) }
}

/// `GET /health` on a ferryd's control socket in a loop (curl, at most 60 s each), recording each
/// call's time and outcome in `stats`, until `until` is set; started before it is returned. The
/// limit is generous on purpose (no time is asserted; the slowest call is printed): under the
/// hostile-client flood a check waits its turn behind up to 4,096 queued connections, which a
/// debug ferryd sharing 2 cores with the attacker (and with CI's VM) works through in seconds.
func healthLoop(socket: String, stats: LockedStats, until stop: AtomicFlag, pause: UInt32) -> Thread {
    let thread = Thread {
        while !stop.isSet {
            let started = Date()
            let r = try? Shell.run(["curl", "-sSf", "--max-time", "60", "--unix-socket", socket, "http://ferryd/health"])
            stats.add(Date().timeIntervalSince(started), failed: r?.status != 0,
                      reason: "curl exit \(r?.status ?? -1) after \(Int(Date().timeIntervalSince(started) * 1000)) ms: \(r?.stderr ?? "")")
            usleep(pause)
        }
    }
    thread.start()
    return thread
}

final class AtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

final class LockedStrings: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
    var values: [String] { lock.lock(); defer { lock.unlock() }; return items }
}

/// Durations seen by one looping checker: how many, the longest, how many failed.
final class LockedStats: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var count = 0
    private var maximum = 0.0
    private var failed = 0
    private var reasons: [String] = []
    func add(_ seconds: Double, failed didFail: Bool = false, reason: String = "") {
        lock.lock()
        count += 1
        maximum = max(maximum, seconds)
        if didFail {
            failed += 1
            reasons.append(reason)
        }
        lock.unlock()
    }
    var longest: Double { lock.lock(); defer { lock.unlock() }; return maximum }
    var failures: Int { lock.lock(); defer { lock.unlock() }; return failed }
    /// What the failed checks said.
    var failureReasons: [String] { lock.lock(); defer { lock.unlock() }; return reasons }
}
