import Blob
import Foundation
import Logging
import Synchronization
import Testing
@testable import Daemon

/// The daemon's image table and mount state machine, built in-process with a recording backend
/// and mounter (no kernel): what happens to concurrent, failing and repeated mounts.
@Suite struct FerryDaemonInProcessTests {
    /// Records attaches, detaches, mounts and unmounts; mounts of targets in `failing` throw, and
    /// each mount takes `mountDelay` (on the daemon's mount thread, as mount(2) would).
    final class RecordingKernel: KernelBackend, Mounter, Sendable {
        struct Refused: Error {}
        let events = Mutex<[String]>([])
        let failing: Set<String>
        let mountDelay: UInt32
        init(failing: Set<String> = [], mountDelayMicroseconds: UInt32 = 0) {
            self.failing = failing
            mountDelay = mountDelayMicroseconds
        }
        var name: String { "recording" }
        func attach(_ image: RegisteredImage, mount: MountRequest) throws -> MountPlan {
            events.withLock { $0.append("attach \(image.id) \(mount.mountpoint)") }
            return .fileBacked(bootstrap: image.bootstrapPath, devices: [])
        }
        func detach(_ image: RegisteredImage, mount: MountRequest) { events.withLock { $0.append("detach \(mount.mountpoint)") } }
        func run() throws {}
        func stop() {}
        func beginRestore() {}
        func endRestore() {}
        func mount(_ plan: MountPlan, at target: String, readaheadKiB: Int?) throws {
            if mountDelay > 0 { usleep(mountDelay) }
            if failing.contains(target) { throw Refused() }
            events.withLock { $0.append("mount \(target)") }
        }
        func unmount(_ target: String) throws { events.withLock { $0.append("unmount \(target)") } }
        func count(_ prefix: String) -> Int { events.withLock { $0.filter { $0.hasPrefix(prefix) }.count } }
    }

    final class Calls: Sendable {
        let count = Atomic<Int>(0)
        var value: Int { count.load(ordering: .relaxed) }
    }

    static func daemon(_ kernel: RecordingKernel, resolutions: Calls, resolveDelay: Duration = .zero,
                       unresolvable: Set<String> = []) throws -> FerryDaemon {
        var configuration = DaemonConfiguration()
        configuration.stateDirectory = NSTemporaryDirectory() + "ferry-inprocess-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        let metadata = BootstrapMetadata(chunkSizeLog2: 16, compression: .lz4, blobs: [])
        return FerryDaemon(configuration: configuration, backend: kernel, resolver: { reference, _ in
            resolutions.count.add(1, ordering: .relaxed)
            if resolveDelay > .zero { try await Task.sleep(for: resolveDelay) }
            guard !unresolvable.contains(reference) else { throw DaemonError.unknownImage(reference) }
            return RegisteredImage(id: "id-" + reference, reference: reference, bootstrapPath: "/nonexistent", metadata: metadata, sources: [])
        }, mounter: kernel, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    /// Eight mounts of one image at once: one resolution, eight mounts; two requests for one
    /// mountpoint at once: one wins, the other is refused and leaves nothing behind.
    @Test func concurrentMountsShareOneResolutionAndOneMountpointTakesOneMount() async throws {
        let kernel = RecordingKernel(mountDelayMicroseconds: 20_000)
        let resolutions = Calls()
        let daemon = try Self.daemon(kernel, resolutions: resolutions, resolveDelay: .milliseconds(200))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<8 { group.addTask { _ = try await daemon.mount(image: "img", at: "/mnt/\(i)") } }
            try await group.waitForAll()
        }
        #expect(resolutions.value == 1, "one resolution for eight concurrent mounts")
        #expect(kernel.count("mount ") == 8)

        let outcomes = await withTaskGroup(of: Bool.self) { group -> [Bool] in
            for _ in 0..<2 { group.addTask { (try? await daemon.mount(image: "img", at: "/mnt/same")) != nil } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 1, "exactly one of two requests for one mountpoint mounts: \(outcomes)")
        #expect(daemon.hasMount(at: "/mnt/same"))
        #expect(kernel.count("mount /mnt/same") == 1)
    }

    /// A mount that fails (image unresolvable, or mount(2) refused) leaves no entry: the
    /// mountpoint can be used again, and a refused mount(2) detaches what it attached.
    @Test func failedMountsLeaveNothingBehind() async throws {
        let kernel = RecordingKernel(failing: ["/mnt/refused"])
        let resolutions = Calls()
        let daemon = try Self.daemon(kernel, resolutions: resolutions, unresolvable: ["missing"])
        await #expect(throws: DaemonError.self) { _ = try await daemon.mount(image: "missing", at: "/mnt/a") }
        #expect(!daemon.hasMount(at: "/mnt/a"))
        _ = try await daemon.mount(image: "img", at: "/mnt/a")
        #expect(daemon.hasMount(at: "/mnt/a"))

        await #expect(throws: DaemonError.self) { _ = try await daemon.mount(image: "img", at: "/mnt/refused") }
        #expect(!daemon.hasMount(at: "/mnt/refused"))
        #expect(kernel.count("detach /mnt/refused") == 1)

        try await daemon.unmount("/mnt/a")
        #expect(!daemon.hasMount(at: "/mnt/a"))
        await #expect(throws: DaemonError.self) { try await daemon.unmount("/mnt/a") }
    }

    /// Mountpoints are one entry however they are spelled (`..`, `.`, doubled slashes).
    @Test func oneMountpointHoweverSpelled() async throws {
        let kernel = RecordingKernel()
        let daemon = try Self.daemon(kernel, resolutions: Calls())
        _ = try await daemon.mount(image: "img", at: "/mnt//x/./y/../z")
        #expect(daemon.hasMount(at: "/mnt/x/z"))
        await #expect(throws: DaemonError.self) { _ = try await daemon.mount(image: "img", at: "/mnt/x/z/") }
    }

    /// Keeps the log records of one daemon.
    struct RecordingLogHandler: LogHandler {
        final class Records: Sendable { let list = Mutex<[(Logger.Level, String)]>([]) }
        let records: Records
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let fields = (event.metadata ?? [:]).map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ")
            records.list.withLock { $0.append((event.level, "\(event.message) \(fields)")) }
        }
    }

    /// A mount registration file that does not parse (the disk's damage or a hand edit — ferryd
    /// writes it atomically) is reported as such, kept aside, and ferryd goes on; it was
    /// silently ignored before.
    @Test func damagedMountRegistrationsAreReportedAndKept() async throws {
        let kernel = RecordingKernel()
        let records = RecordingLogHandler(records: .init())
        var configuration = DaemonConfiguration()
        configuration.stateDirectory = NSTemporaryDirectory() + "ferry-inprocess-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: configuration.stateDirectory) }
        let file = configuration.stateDirectory + "/mounts.json"
        let torn = Data(#"[{"reference":"registry.example/app:1","mountpoint":"/mnt/a","dom"#.utf8)
        try torn.write(to: URL(fileURLWithPath: file))
        let metadata = BootstrapMetadata(chunkSizeLog2: 16, compression: .lz4, blobs: [])
        let daemon = FerryDaemon(configuration: configuration, backend: kernel, resolver: { reference, _ in
            RegisteredImage(id: "id-" + reference, reference: reference, bootstrapPath: "/nonexistent", metadata: metadata, sources: [])
        }, mounter: kernel, logger: Logger(label: "test", factory: { _ in records }))
        await daemon.restoreRegistrations()
        let critical = records.records.list.withLock { $0 }.filter { $0.0 == .critical }.map(\.1)
        #expect(critical.count == 1 && critical.first?.contains("mounts.json") == true, "\(critical)")
        #expect(!FileManager.default.fileExists(atPath: file))
        #expect(FileManager.default.contents(atPath: file + ".damaged") == torn)
        _ = try await daemon.mount(image: "img", at: "/mnt/after")
        #expect(kernel.count("mount /mnt/after") == 1)
    }
}
