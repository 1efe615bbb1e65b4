import Foundation
@testable import FerrySystem

/// A scratch directory on the host's disk (not tmpfs: fanotify pre-content marks need a
/// filesystem that allows them, e.g. ext4; tmpfs answers EOPNOTSUPP on 6.18).
func kernelScratchDirectory(_ name: String) throws -> String {
    let base = ProcessInfo.processInfo.environment["FERRY_KERNEL_SCRATCH"] ?? NSTemporaryDirectory()
    let dir = (base as NSString).appendingPathComponent("ferry-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A value set once by another thread.
final class ThreadResult<T: Sendable>: @unchecked Sendable {
    private let lock = NSCondition()
    private var value: T?

    func set(_ v: T) {
        lock.lock(); value = v; lock.broadcast(); lock.unlock()
    }

    /// Waits up to `seconds` (a guard against a hung test, not a timing assertion).
    func wait(seconds: Double = 60) -> T? {
        lock.lock(); defer { lock.unlock() }
        let deadline = Date(timeIntervalSinceNow: seconds)
        while value == nil { if !lock.wait(until: deadline) { break } }
        return value
    }

    var current: T? {
        lock.lock(); defer { lock.unlock() }
        return value
    }
}

/// Reads `count` bytes at `offset` of `path` on a new thread; the result is the bytes or the errno.
func readOnThread(_ path: String, offset: UInt64, count: Int) -> ThreadResult<Result<[UInt8], SystemError>> {
    let result = ThreadResult<Result<[UInt8], SystemError>>()
    Thread.detachNewThread {
        do {
            let fd = try FileDescriptor.open(path, .readOnly)
            defer { try? fd.close() }
            result.set(.success(try fd.read(at: offset, count: count)))
        } catch let e as SystemError {
            result.set(.failure(e))
        } catch {
            result.set(.failure(.syscall("unexpected \(error)", errno: -1)))
        }
    }
    return result
}

/// Waits for events on a non-blocking group, with a guard against hanging forever.
func nextEvents(_ group: FanotifyGroup, seconds: Int = 60) throws -> [FanotifyEvent] {
    for _ in 0..<(seconds * 100) {
        let events = try group.readEvents()
        if !events.isEmpty { return events }
        usleep(10_000)
    }
    return []
}

/// Whether the process runs as root (the kernel tests need CAP_SYS_ADMIN).
var isRoot: Bool { getuid() == 0 }

func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}
