import Foundation
import Testing
@testable import FerrySystem

/// Fanotify pre-content events on this host's kernel (Linux 6.14+, root).
@Suite(.serialized) struct FanotifyKernelTests {
    static var supported: Bool {
        guard isRoot, let g = try? FanotifyGroup.preContent() else { return false }
        try? g.close()
        return true
    }

    /// A 64 KiB sparse file with a pre-content mark, and its group.
    static func markedSparseFile(_ name: String) throws -> (dir: String, path: String, group: FanotifyGroup) {
        let dir = try kernelScratchDirectory(name)
        let path = dir + "/cache.blob"
        let fd = try FileDescriptor.open(path, .createExclusive)
        try fd.truncate(to: 64 * 1024)
        try fd.close()
        let group = try FanotifyGroup.preContent(nonBlocking: true)
        try group.mark(path)
        return (dir, path, group)
    }

    @Test(.enabled(if: supported, "needs root and a kernel with FAN_CLASS_PRE_CONTENT"))
    func readerGetsTheBytesFilledThroughTheEventFd() throws {
        let (dir, path, group) = try Self.markedSparseFile("fan-allow")
        defer { try? group.close(); try? FileManager.default.removeItem(atPath: dir) }

        let reader = readOnThread(path, offset: 8192, count: 4096)
        let events = try nextEvents(group)
        try #require(events.count == 1)
        let event = events[0]
        #expect(event.mask & FanotifyConstants.preAccess != 0)
        #expect(event.isPermissionEvent)
        #expect(event.fd >= 0)
        #expect(event.infoProblem == nil)
        // The range is the read request itself (readahead is off for files with pre-content marks).
        #expect(event.range == FanotifyRange(offset: 8192, count: 4096))
        #expect(reader.current == nil, "the reader must wait for the answer")

        let data = pattern(4096, seed: 3)
        let buffer = try AlignedBuffer(count: 4096)
        try buffer.copy(from: data)
        try FanotifyGroup.fill(eventFD: event.fd, from: buffer, count: 4096, at: 8192)
        try group.finish(event, .allow)

        let result = try #require(reader.wait())
        #expect(try result.get() == data)
        // Writing through the event fd raised no event of its own.
        #expect(try group.readEvents().isEmpty)
    }

    @Test(.enabled(if: supported, "needs root and a kernel with FAN_CLASS_PRE_CONTENT"))
    func denyWithEIOFailsTheRead() throws {
        let (dir, path, group) = try Self.markedSparseFile("fan-deny")
        defer { try? group.close(); try? FileManager.default.removeItem(atPath: dir) }

        let reader = readOnThread(path, offset: 5000, count: 100)
        let events = try nextEvents(group)
        try #require(events.count == 1)
        // Linux 6.18 reports the read widened to whole pages: 5000+100 lies in page 1.
        #expect(events[0].range == FanotifyRange(offset: 4096, count: 4096))
        try group.finish(events[0], .denyWithErrno(EIO))

        let result = try #require(reader.wait())
        switch result {
        case .success(let bytes): Issue.record("read succeeded with \(bytes.count) bytes")
        case .failure(let error): #expect(error == .syscall("pread \(path)", errno: EIO))
        }
    }

    @Test(.enabled(if: supported, "needs root and a kernel with FAN_CLASS_PRE_CONTENT"))
    func denyWithAnErrnoOutsideTheAllowedSetIsRejected() throws {
        let (dir, path, group) = try Self.markedSparseFile("fan-einval")
        defer { try? group.close(); try? FileManager.default.removeItem(atPath: dir) }

        let reader = readOnThread(path, offset: 0, count: 10)
        let events = try nextEvents(group)
        try #require(events.count == 1)
        // ENOENT is not one of EIO, EPERM, EBUSY, ETXTBSY, EAGAIN, ENOSPC, EDQUOT.
        #expect(throws: SystemError.syscall("write fanotify response denyWithErrno(2) for fd \(events[0].fd)", errno: EINVAL)) {
            try group.respond(to: events[0].fd, .denyWithErrno(ENOENT))
        }
        // The event is still pending; a valid answer still works.
        try group.finish(events[0], .denyWithErrno(EAGAIN))
        let result = try #require(reader.wait())
        #expect(throws: SystemError.syscall("pread \(path)", errno: EAGAIN)) { try result.get() }
    }

    @Test(.enabled(if: supported, "needs root and a kernel with FAN_CLASS_PRE_CONTENT"))
    func unmarkedFileRaisesNothingAndTmpfsRefusesTheMark() throws {
        let (dir, path, group) = try Self.markedSparseFile("fan-unmark")
        defer { try? group.close(); try? FileManager.default.removeItem(atPath: dir) }
        try group.unmark(path)
        let fd = try FileDescriptor.open(path, .readOnly)
        #expect(try fd.read(at: 0, count: 16) == [UInt8](repeating: 0, count: 16))
        try fd.close()
        #expect(try group.readEvents().isEmpty)

        if FileManager.default.fileExists(atPath: "/dev/shm") {
            let shm = "/dev/shm/ferry-fan-\(getpid())"
            _ = FileManager.default.createFile(atPath: shm, contents: Data(count: 4096))
            defer { try? FileManager.default.removeItem(atPath: shm) }
            #expect(throws: SystemError.syscall("fanotify_mark(FAN_MARK_ADD, \(shm))", errno: EOPNOTSUPP)) { try group.mark(shm) }
        }
    }
}
