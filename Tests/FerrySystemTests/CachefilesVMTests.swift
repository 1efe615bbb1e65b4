import Foundation
import Testing
@testable import FerrySystem

/// EROFS over cachefiles on-demand, served by a tiny daemon built from the FerrySystem
/// wrappers. Runs only where `/dev/cachefiles` exists (the `Tools/vm` guest); run it with
/// `Tools/vm -- .build/debug/FerryPackageTests.xctest --testing-library swift-testing --filter CachefilesVM`.
@Suite(.serialized) struct CachefilesVMTests {
    static var supported: Bool {
        isRoot && FileManager.default.fileExists(atPath: "/dev/cachefiles")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/mkfs.erofs")
    }

    /// `system(3)`, not Foundation's Process: in the guest, Process hangs after CoreFoundation
    /// fails to create its wake-up socket pair.
    static func run(_ command: String) throws {
        let status = system(command)
        if status != 0 { throw SystemError.invalidArgument("command \(command)", reason: "status \(status)") }
    }

    /// What the serving thread saw, for the test to check.
    struct Log: Sendable {
        var opens: [CachefilesOpen] = []
        var reads: [(offset: UInt64, length: UInt64)] = []
        var closes = 0
        var errors: [String] = []
    }

    final class Shared: @unchecked Sendable {
        let lock = NSLock()
        var log = Log()
        var stop = false
        func update(_ body: (inout Log) -> Void) { lock.lock(); body(&log); lock.unlock() }
        var stopping: Bool { lock.lock(); defer { lock.unlock() }; return stop }
    }

    /// The daemon: OPEN → copen with the image size; READ → aligned write through io_uring,
    /// then READ_COMPLETE; CLOSE → close the anonymous fd.
    static func serve(_ device: CachefilesDevice, image: String, fsid: String, shared: Shared) {
        do {
            let source = try FileDescriptor.open(image, .readOnly)
            let size = try source.size()
            let ring = try IORing(entries: 4)
            var objects: [UInt32: Int32] = [:]
            var token: UInt64 = 0
            while !shared.stopping {
                guard try device.waitForMessage(timeoutMilliseconds: 200) else { continue }
                guard let message = try device.readMessage() else { continue }
                switch message.request {
                case let .open(open):
                    shared.update { $0.opens.append(open) }
                    objects[message.objectID] = open.fd
                    if open.volumeKey == "erofs,\(fsid)" && open.cookieKeyString == fsid {
                        try device.send(.openComplete(messageID: message.messageID, size: Int64(size)))
                    } else {
                        try device.send(.openFailed(messageID: message.messageID, errno: ENOENT))
                    }
                case let .read(offset, length):
                    shared.update { $0.reads.append((offset, length)) }
                    guard let fd = objects[message.objectID] else {
                        shared.update { $0.errors.append("READ for unknown object \(message.objectID)") }
                        continue
                    }
                    // Direct I/O: page-aligned start, whole pages, zero tail past the image end.
                    let page = UInt64(AlignedBuffer.pageSize)
                    let start = offset / page * page
                    let end = (offset + length + page - 1) / page * page
                    let buffer = try AlignedBuffer(count: Int(end - start))
                    let n = try source.read(into: buffer, count: Int(min(end, max(size, start)) - start), at: start)
                    buffer.zero(n..<buffer.count)
                    token += 1
                    try ring.write(FileDescriptor(rawValue: fd, name: "object \(message.objectID)"), from: buffer,
                                   count: buffer.count, at: start, token: token)
                    let done = try ring.completions(waitingFor: 1)
                    if done.first?.result != Int32(buffer.count) {
                        shared.update { $0.errors.append("write \(start)+\(buffer.count): \(done)") }
                    }
                    try CachefilesObject.readComplete(fd: fd, messageID: message.messageID)
                case .close:
                    shared.update { $0.closes += 1 }
                    if let fd = objects.removeValue(forKey: message.objectID) { _ = close(fd) }
                case let .unknown(opcode, _):
                    shared.update { $0.errors.append("unknown opcode \(opcode)") }
                }
            }
            // Stopping closes the anonymous fds, as the death of the process would.
            for fd in objects.values { _ = close(fd) }
        } catch {
            shared.update { $0.errors.append("\(error)") }
        }
        shared.lock.lock(); shared.stop = true; shared.lock.unlock()
    }

    @Test(.enabled(if: supported, "needs /dev/cachefiles (run inside Tools/vm)"))
    func erofsMountServedOnDemandReadsBackEveryByte() throws {
        let dir = try kernelScratchDirectory("cachefiles")
        let src = dir + "/src", mnt = dir + "/mnt", cache = dir + "/cache"
        for d in [src + "/sub", mnt, cache] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        let files: [String: [UInt8]] = [
            "big.bin": pattern(150_000, seed: 5),
            "sub/small.txt": Array("on demand\n".utf8),
        ]
        for (name, bytes) in files { try Data(bytes).write(to: URL(fileURLWithPath: src + "/" + name)) }
        try Self.run("mkfs.erofs \(dir)/image.erofs \(src) >/dev/null 2>&1")
        // The cache directory needs xattrs and direct I/O: ext4 on a loop file, not tmpfs.
        try Self.run("truncate -s 64M \(dir)/cache.ext4 && mkfs.ext4 -q \(dir)/cache.ext4 && mount -o loop \(dir)/cache.ext4 \(cache)")
        defer { try? Mount.unmount(cache, flags: .detach) }

        let device = try CachefilesDevice.open()
        try device.bindOnDemand(directory: cache, tag: "ferrytest")
        // A second opener is refused while the first holds the device.
        #expect(throws: SystemError.self) { _ = try CachefilesDevice.open() }

        let fsid = "ferry-img"
        let shared = Shared()
        Thread.detachNewThread { Self.serve(device, image: dir + "/image.erofs", fsid: fsid, shared: shared) }

        try Mount.erofsOnDemand(fsid: fsid, at: mnt)
        for (name, expected) in files {
            let got = try FileDescriptor.open(mnt + "/" + name, .readOnly)
            #expect(try got.read(upTo: expected.count + 1) == expected, "\(name) through the on-demand mount")
            try got.close()
        }
        try Mount.unmount(mnt)

        shared.lock.lock(); shared.stop = true; let log = shared.log; shared.lock.unlock()
        #expect(log.errors.isEmpty, "\(log.errors)")
        #expect(log.opens.count == 1)
        #expect(log.opens.first?.volumeKey == "erofs,\(fsid)")
        #expect(log.opens.first?.cookieKey == Array(fsid.utf8))
        #expect(!log.reads.isEmpty)
        print("cachefiles-vm: OPEN \(log.opens.map { "volume=\($0.volumeKey) cookie=\($0.cookieKeyString) fd=\($0.fd) flags=\($0.flags)" })")
        print("cachefiles-vm: READs \(log.reads.map { "\($0.offset)+\($0.length)" }.joined(separator: " ")) CLOSEs \(log.closes)")
        usleep(300_000)
        try device.close()
    }

    @Test(.enabled(if: supported, "needs /dev/cachefiles (run inside Tools/vm)"))
    func closingTheDeviceFailsLaterReadsWithEIO() throws {
        let dir = try kernelScratchDirectory("cachefiles-dead")
        let src = dir + "/src", mnt = dir + "/mnt", cache = dir + "/cache"
        for d in [src, mnt, cache] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        try Data(pattern(3 * 4096, seed: 1)).write(to: URL(fileURLWithPath: src + "/first"))
        try Data(pattern(200_000, seed: 2)).write(to: URL(fileURLWithPath: src + "/second"))
        try Self.run("mkfs.erofs \(dir)/image.erofs \(src) >/dev/null 2>&1")
        try Self.run("truncate -s 64M \(dir)/cache.ext4 && mkfs.ext4 -q \(dir)/cache.ext4 && mount -o loop \(dir)/cache.ext4 \(cache)")
        defer { try? Mount.unmount(cache, flags: .detach) }

        let device = try CachefilesDevice.open()
        try device.bindOnDemand(directory: cache, tag: "ferrydead")
        let shared = Shared()
        Thread.detachNewThread { Self.serve(device, image: dir + "/image.erofs", fsid: "dead-img", shared: shared) }
        try Mount.erofsOnDemand(fsid: "dead-img", at: mnt)
        let first = try FileDescriptor.open(mnt + "/first", .readOnly)
        #expect(try first.read(upTo: 3 * 4096) == pattern(3 * 4096, seed: 1))
        try first.close()

        // The daemon goes away: stop serving and close the device (what a crash does).
        shared.lock.lock(); shared.stop = true; shared.lock.unlock()
        usleep(500_000)
        try device.close()
        // Anything not cached yet fails with EIO: here already the open, whose inode lies in a
        // metadata block that was never read (the kernel logs "failed to get inode ... err -5").
        do {
            let second = try FileDescriptor.open(mnt + "/second", .readOnly)
            defer { try? second.close() }
            let bytes = try second.read(upTo: 200_000)
            Issue.record("read \(bytes.count) bytes after the device closed")
        } catch let SystemError.syscall(_, errno) {
            // EIO when the device closes while object fds are open (cachefiles_flush_reqs);
            // ENOBUFS when the object fds closed first, as here (the object must be reopened,
            // and nobody answers). Either way a failure, never wrong bytes.
            #expect(errno == EIO || errno == ENOBUFS, "errno \(errno)")
        }
        // What was cached before stays readable from the page cache.
        let firstAgain = try FileDescriptor.open(mnt + "/first", .readOnly)
        #expect(try firstAgain.read(upTo: 3 * 4096) == pattern(3 * 4096, seed: 1))
        try firstAgain.close()
        // Observation for Kernel-Notes (not asserted): can a new daemon open the device while the
        // dead cache's mount exists, and after it is unmounted?
        func tryOpen() -> String {
            do { try CachefilesDevice.open().close(); return "opens" } catch { return "\(error)" }
        }
        print("cachefiles-vm: reopen with the mount still present: \(tryOpen())")
        try Mount.unmount(mnt)
        print("cachefiles-vm: reopen after unmount: \(tryOpen())")
    }
}
