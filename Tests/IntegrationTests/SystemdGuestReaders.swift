import FerrySystem
import Foundation

/// Readers for `SystemdGuestTests`: threads that read every regular file of each mount given to
/// them, again and again, compare every byte with the reference tree, and drop the page cache
/// after each pass so the kernel keeps asking (fscache asks ferryd for what its cache files lack).
/// They count files, bytes, wrong bytes and failed reads per phase and time every `read(2)`.
final class GuestReaders: @unchecked Sendable {
    struct Reference {
        let path: String
        let bytes: [UInt8]
    }

    /// What the readers saw during one phase.
    struct Tally {
        var files = 0
        var bytes = 0
        var wrongBytes = 0
        var failedReads = 0
        var failures: [String] = []
        /// The longest single `read(2)` (or `open(2)`), in seconds.
        var longestStall = 0.0
        /// Files whose slowest `read(2)` or `open(2)` took a second or more (waited for a ferryd).
        var slowFiles = 0
    }

    private let files: [Reference]
    private let lock = NSLock()
    private var mounts: [String] = []
    private var phase = "setup"
    private var tallies: [String: Tally] = [:]
    private var passesDone: [String: Int] = [:]
    private var firstReadIssued: Set<String> = []
    /// Per reader: when its current `read(2)` began, if one is in progress.
    private var inFlight: [Int: UInt64] = [:]
    private var stopping = false
    private var running = 0
    /// Bumped whenever the mounts change: readers drop the pass they are in and start over with
    /// the new list, so a fresh mount is read at once.
    private var generation = 0

    /// Names that are not UTF-8 (the rich image has one), which a `String` path cannot name.
    private(set) var skippedNames = 0

    /// Regular files below `reference` (the `umoci unpack` rootfs), read once into memory.
    init(reference: String) throws {
        var found: [Reference] = []
        var skipped = 0
        let enumerator = FileManager.default.enumerator(atPath: reference)
        while let relative = enumerator?.nextObject() as? String {
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: reference + "/" + relative) else {
                skipped += 1
                continue
            }
            guard attributes[.type] as? FileAttributeType == .typeRegular else { continue }
            let data = try Data(contentsOf: URL(fileURLWithPath: reference + "/" + relative))
            found.append(Reference(path: relative, bytes: [UInt8](data)))
        }
        files = found.sorted { $0.path < $1.path }
        skippedNames = skipped
    }

    var fileCount: Int { files.count }
    var referenceBytes: Int { files.reduce(0) { $0 + $1.bytes.count } }

    /// Starts `count` reader threads.
    func start(count: Int) {
        for index in 0..<count {
            lock.withLock { running += 1 }
            let thread = Thread { [self] in
                readUntilStopped(index: index, of: count)
                lock.withLock { running -= 1 }
            }
            thread.start()
        }
    }

    /// Stops the readers; true when all ended within `timeout` seconds.
    func stop(timeout: Double) -> Bool {
        lock.withLock { stopping = true }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if lock.withLock({ running == 0 }) { return true }
            usleep(100_000)
        }
        return false
    }

    /// The mounts to read from now on, and the phase their results count towards.
    func read(_ mounts: [String], phase: String) {
        lock.withLock {
            self.mounts = mounts
            self.phase = phase
            generation += 1
            for mount in mounts where passesDone[mount] == nil { passesDone[mount] = 0 }
        }
    }

    func setPhase(_ phase: String) { lock.withLock { self.phase = phase } }
    func tally(_ phase: String) -> Tally { lock.withLock { tallies[phase] ?? Tally() } }
    var allTallies: [String: Tally] { lock.withLock { tallies } }
    func passes(_ mount: String) -> Int { lock.withLock { passesDone[mount] ?? 0 } }
    func hasStartedReading(_ mount: String) -> Bool { lock.withLock { firstReadIssued.contains(mount) } }
    /// Seconds the oldest `read(2)` in progress has waited so far (0 when none is in progress).
    var oldestReadInProgress: Double {
        // A read may start between taking `now` and taking the lock: it has waited 0 s.
        let now = Self.now
        return lock.withLock { inFlight.values.map { Double(now > $0 ? now - $0 : 0) / 1e9 }.max() ?? 0 }
    }

    static var now: UInt64 { DispatchTime.now().uptimeNanoseconds }

    private func readUntilStopped(index: Int, of count: Int) {
        while true {
            guard let (mounts, generation) = lock.withLock({ stopping ? nil : (self.mounts, self.generation) }) else { return }
            var current = true
            passes: for mount in mounts {
                // Readers start at different files, so they do not move in lockstep.
                let start = files.isEmpty ? 0 : (files.count * index / count)
                for offset in 0..<files.count {
                    let (stop, changed) = lock.withLock { (stopping, self.generation != generation) }
                    if stop { return }
                    if changed { current = false; break passes }
                    readAndCompare(files[(start + offset) % files.count], in: mount, reader: index)
                }
                lock.withLock { passesDone[mount, default: 0] += 1 }
            }
            if current && index == 0 { Self.dropPageCache() }
            if mounts.isEmpty { usleep(100_000) }
        }
    }

    private func readAndCompare(_ reference: Reference, in mount: String, reader: Int) {
        let path = mount + "/" + reference.path
        lock.withLock { firstReadIssued.insert(mount) }
        var offset = 0
        var failure: String?
        var wrong = 0
        var stall = 0.0
        let descriptor: FileDescriptor
        let openStart = Self.now
        lock.withLock { inFlight[reader] = openStart }
        do {
            descriptor = try FileDescriptor.open(path, .readOnly)
        } catch {
            lock.withLock { inFlight[reader] = nil }
            record(reference: reference, bytes: 0, wrong: 0, failure: "open \(path): \(error)", stall: Double(Self.now - openStart) / 1e9)
            return
        }
        stall = Double(Self.now - openStart) / 1e9
        defer { try? descriptor.close() }
        while true {
            let begin = Self.now
            lock.withLock { inFlight[reader] = begin }
            let chunk: [UInt8]
            do {
                chunk = try descriptor.read(upTo: 128 << 10, partial: true)
            } catch {
                lock.withLock { inFlight[reader] = nil }
                failure = "read \(path) at \(offset): \(error)"
                stall = max(stall, Double(Self.now - begin) / 1e9)
                break
            }
            lock.withLock { inFlight[reader] = nil }
            stall = max(stall, Double(Self.now - begin) / 1e9)
            if chunk.isEmpty { break }
            let end = min(offset + chunk.count, reference.bytes.count)
            if offset < end {
                for (expected, actual) in zip(reference.bytes[offset..<end], chunk) where expected != actual { wrong += 1 }
            }
            wrong += offset + chunk.count - max(end, offset)
            offset += chunk.count
        }
        if failure == nil && offset < reference.bytes.count { wrong += reference.bytes.count - offset }
        record(reference: reference, bytes: offset, wrong: wrong, failure: failure, stall: stall)
    }

    private func record(reference: Reference, bytes: Int, wrong: Int, failure: String?, stall: Double) {
        lock.withLock {
            var t = tallies[phase] ?? Tally()
            t.files += 1
            t.bytes += bytes
            t.wrongBytes += wrong
            if let failure {
                t.failedReads += 1
                if t.failures.count < 20 { t.failures.append(failure) }
            } else if wrong > 0, t.failures.count < 20 {
                t.failures.append("\(reference.path): \(wrong) wrong bytes")
            }
            t.longestStall = max(t.longestStall, stall)
            if stall >= 1 { t.slowFiles += 1 }
            tallies[phase] = t
        }
    }

    static func dropPageCache() {
        if let handle = FileHandle(forWritingAtPath: "/proc/sys/vm/drop_caches") {
            handle.write(Data("3\n".utf8))
            try? handle.close()
        }
    }
}
