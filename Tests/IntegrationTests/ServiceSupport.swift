import FerrySystem
import Foundation
import Testing

/// Stands in for systemd around a real ferryd: listens on a `NOTIFY_SOCKET` of its own, keeps
/// what ferryd stores with `FDSTORE=1`, and starts ferryd again with those descriptors as
/// `LISTEN_FDS` (LISTEN_PID must be ferryd's own pid, so ferryd is started through
/// `sh -c 'export LISTEN_PID=$$; exec ferryd …'`, which keeps the pid and the descriptors).
final class ServiceManagerStandIn: @unchecked Sendable {
    let workspace: Workspace
    let listener: NotifyListener
    let stateDirectory: String
    let socket: String
    let logPath: String
    let extraArguments: [String]
    /// Set: ferryd gets `NOTIFY_SOCKET` (and the store's descriptors). Clear: ferryd runs as if
    /// started by hand, and keeps its fanotify group with the holder process.
    let actsAsServiceManager: Bool
    let watchdogMicroseconds: UInt64?

    private let lock = NSLock()
    private var messages: [(at: Date, assignments: [String], descriptors: [FileDescriptor])] = []
    /// The descriptor store: name → descriptor.
    private var store: [(name: String, fd: FileDescriptor)] = []
    private var receiving = true
    private(set) var child: ChildProcess?

    init(workspace: Workspace, actsAsServiceManager: Bool = true, watchdogMicroseconds: UInt64? = nil,
         extraArguments: [String] = []) throws {
        self.workspace = workspace
        self.actsAsServiceManager = actsAsServiceManager
        self.watchdogMicroseconds = watchdogMicroseconds
        self.extraArguments = extraArguments
        listener = try NotifyListener(path: workspace.sub("notify.sock"))
        stateDirectory = workspace.sub("ferryd-state")
        socket = workspace.sub("ferryd.sock")
        logPath = workspace.sub("ferryd.log")
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        // Weak: the thread must not keep the stand-in (and so its ferryd) alive past the test.
        Thread.detachNewThread { [weak self] in
            while let self, self.receiveOnce() {}
        }
    }

    /// Takes one message if one comes within 100 ms; false once the stand-in is closing.
    private func receiveOnce() -> Bool {
        guard lock.withLock({ receiving }) else { return false }
        do {
            guard let message = try listener.receive(timeoutMilliseconds: 100) else { return true }
            lock.withLock {
                messages.append((Date(), message.assignments, message.descriptors))
                if message.assignments.contains("FDSTORE=1") {
                    let name = message.assignments.first { $0.hasPrefix("FDNAME=") }.map { String($0.dropFirst(7)) } ?? "stored"
                    // Like systemd: one entry per name; a descriptor stored again replaces the old one.
                    for old in store where old.name == name { try? old.fd.close() }
                    store.removeAll { $0.name == name }
                    for fd in message.descriptors { store.append((name, fd)) }
                }
            }
        } catch {
            usleep(10_000)
        }
        return true
    }

    /// Every message so far, in order.
    var received: [(at: Date, assignments: [String], descriptors: [FileDescriptor])] { lock.withLock { messages } }
    var stored: [(name: String, fd: FileDescriptor)] { lock.withLock { store } }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Starts ferryd; with the stored descriptors as LISTEN_FDS when acting as the manager.
    /// Returns once it is ready: `READY=1` (manager) or the control socket answers (by hand).
    @discardableResult
    func start() throws -> Date {
        let before = received.count
        let log = try FileDescriptor.open(logPath, .readWrite)
        defer { try? log.close() }
        _ = try log.seek(to: try log.size())
        var environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        var descriptors: [Int32: FileDescriptor] = [1: log, 2: log]
        if actsAsServiceManager {
            environment["NOTIFY_SOCKET"] = listener.path
            if let watchdogMicroseconds { environment["WATCHDOG_USEC"] = String(watchdogMicroseconds) }
            let passed = stored
            if !passed.isEmpty {
                environment["LISTEN_FDS"] = String(passed.count)
                environment["LISTEN_FDNAMES"] = passed.map(\.name).joined(separator: ":")
                for (i, entry) in passed.enumerated() { descriptors[3 + Int32(i)] = entry.fd }
            }
        }
        let arguments = ["-c", "export LISTEN_PID=$$; exec \"$0\" \"$@\"", Build.ferryd,
                         "--state-dir", stateDirectory, "--socket", socket, "--log-level", "debug"] + extraArguments
        child = try ChildProcess.spawn("/bin/sh", arguments: arguments, environment: environment, descriptors: descriptors)
        for _ in 0..<400 {
            if actsAsServiceManager {
                if let ready = received.dropFirst(before).first(where: { $0.assignments.contains("READY=1") }) { return ready.at }
            } else if (try? Shell.run([Build.ferry, "status", "--socket", socket]))?.status == 0 {
                return Date()
            }
            if let child, child.hasEnded() { throw Shell.Failure(command: "ferryd", status: -1, output: self.log) }
            usleep(10_000)
        }
        throw Shell.Failure(command: "ferryd (waiting until ready)", status: -1, output: self.log)
    }

    /// Sends `signal` to ferryd and waits for it to end.
    func stop(signal: Int32) {
        guard let child else { return }
        child.signal(signal)
        _ = try? child.wait()
        self.child = nil
    }

    @discardableResult
    func ferry(_ arguments: [String]) throws -> String {
        try Shell.check([Build.ferry] + arguments + ["--socket", socket])
    }

    deinit {
        stop(signal: SIGKILL)
        lock.withLock { receiving = false }
        usleep(150_000)
        listener.close()
        for entry in store { try? entry.fd.close() }
        // Any ferryd of this state directory a test left behind (e.g. one it restarted by hand).
        _ = try? Shell.run(["pkill", "-9", "-f", "--", "--state-dir \(stateDirectory) "])
        _ = try? Shell.run(["pkill", "-9", "-f", "hold-group --socket \(stateDirectory)/"])
    }
}

/// A small single-layer image for the restart tests: four 1 MiB files of random bytes that
/// readers read over and over, and one file nobody reads (so the blob's cache file never
/// becomes complete, stays marked, and every read keeps going through ferryd).
struct SmallServiceImage {
    let layout: String
    let reference: String
    let files: [String: [UInt8]]

    static let readFiles = ["a.bin", "b.bin", "c.bin", "d.bin"]

    init(_ ws: Workspace, name: String = "small") throws {
        let root = ws.sub("\(name)-root")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        var files: [String: [UInt8]] = [:]
        var generator = SystemRandomNumberGenerator()
        for name in Self.readFiles + ["never-read.bin"] {
            let count = name == "never-read.bin" ? 256 * 1024 : 1 << 20
            let bytes = (0..<count / 8).flatMap { _ -> [UInt8] in
                let v = generator.next() as UInt64
                return (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: "\(root)/\(name)"))
            files[name] = bytes
        }
        let tar = ws.sub("\(name)-layer.tar")
        try Shell.check(["tar", "-C", root, "-cf", tar, "."])
        let source = ws.sub("\(name)-source")
        try Shell.check(["umoci", "init", "--layout", source])
        try Shell.check(["umoci", "new", "--image", "\(source):t"])
        try Shell.check(["umoci", "raw", "add-layer", "--no-history", "--image", "\(source):t", tar])
        layout = ws.sub("\(name)-ferry")
        try Shell.check([Build.ferry, "convert", "oci:\(source):t", "oci:\(layout):t", "--chunk-size", "4KiB"])
        reference = "oci:\(layout):t"
        self.files = files
    }
}

/// Readers on threads that read files of a mount over and over (dropping the mounted file's
/// cached pages before each pass, so every pass asks ferryd again), comparing every byte.
final class ContinuousReaders: @unchecked Sendable {
    struct Failure { var at: Date; var file: String; var error: String }

    private let lock = NSLock()
    private var running = true
    private var threadsLeft = 0
    private(set) var wrongBytes = 0
    private(set) var failures: [Failure] = []
    private(set) var passes = 0
    /// Each read(2) of 64 KiB that took long: when it ended and how long it took.
    private(set) var slowReads: [(end: Date, seconds: Double)] = []

    init(mountpoint: String, files: [String: [UInt8]], names: [String]) {
        threadsLeft = names.count
        for name in names {
            guard let expected = files[name] else { continue }
            Thread.detachNewThread { [self] in
                defer { lock.withLock { threadsLeft -= 1 } }
                while lock.withLock({ running }) { readOnce(path: "\(mountpoint)/\(name)", name: name, expected: expected) }
            }
        }
    }

    private func readOnce(path: String, name: String, expected: [UInt8]) {
        do {
            let fd = try FileDescriptor.open(path, .readOnly)
            defer { try? fd.close() }
            try fd.dropCachedPages()
            var offset = 0
            while offset < expected.count {
                let start = Date()
                let piece = try fd.read(at: UInt64(offset), count: min(65536, expected.count - offset))
                let took = Date().timeIntervalSince(start)
                guard !piece.isEmpty else { throw Shell.Failure(command: "read \(path)", status: -1, output: "early end at \(offset)") }
                var wrong = 0
                for (i, b) in piece.enumerated() where b != expected[offset + i] { wrong += 1 }
                lock.withLock {
                    wrongBytes += wrong
                    if took > 0.05 { slowReads.append((Date(), took)) }
                }
                offset += piece.count
            }
            lock.withLock { passes += 1 }
        } catch {
            lock.withLock { failures.append(Failure(at: Date(), file: name, error: "\(error)")) }
            usleep(10_000)
        }
    }

    /// Stops the readers and waits for them (a reader blocked in the kernel finishes its read first).
    func stop() {
        lock.withLock { running = false }
        for _ in 0..<3000 where lock.withLock({ threadsLeft }) > 0 { usleep(10_000) }
    }

    var snapshot: (wrongBytes: Int, failures: [Failure], passes: Int, slowReads: [(end: Date, seconds: Double)]) {
        lock.withLock { (wrongBytes, failures, passes, slowReads) }
    }
}

/// The mount ID of `mountpoint` in /proc/self/mountinfo (changes if it is ever unmounted and mounted again).
func mountID(of mountpoint: String) -> String? {
    let info = (try? readWholeFile("/proc/self/mountinfo")) ?? ""
    return info.split(separator: "\n").first { $0.split(separator: " ").dropFirst(4).first.map(String.init) == mountpoint }
        .flatMap { $0.split(separator: " ").first.map(String.init) }
}
