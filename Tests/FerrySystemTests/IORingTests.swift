import Foundation
import Testing
@testable import FerrySystem

@Suite struct IORingTests {
    @Test func alignedBufferIsPageAlignedZeroedAndBoundsChecked() throws {
        let b = try AlignedBuffer(count: 3 * 4096)
        #expect(b.isAddressAligned(to: 4096))
        #expect(b.bytes == [UInt8](repeating: 0, count: 3 * 4096))
        try b.copy(from: [1, 2, 3], at: 4095)
        #expect(b.bytes(4094..<4099) == [0, 1, 2, 3, 0])
        b.zero(4096..<4097)
        #expect(b.bytes(4094..<4099) == [0, 1, 0, 3, 0])
        b[0] = 9
        #expect(b[0] == 9)
        #expect(throws: SystemError.self) { try b.copy(from: [1, 2], at: 3 * 4096 - 1) }
        #expect(throws: SystemError.self) { try AlignedBuffer(count: 0) }
        #expect(throws: SystemError.self) { try AlignedBuffer(count: 10, alignment: 3000) }
    }

    @Test func writesAndReadsThroughTheRingWithTokens() throws {
        let dir = try kernelScratchDirectory("ioring")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fd = try FileDescriptor.open(dir + "/f", .createReadWrite)
        defer { try? fd.close() }

        let ring = try IORing(entries: 8)
        let a = try AlignedBuffer(count: 4096), b = try AlignedBuffer(count: 4096)
        try a.copy(from: pattern(4096, seed: 1))
        try b.copy(from: pattern(4096, seed: 2))
        try ring.write(fd, from: a, count: 4096, at: 0, token: 10)
        try ring.write(fd, from: b, count: 4096, at: 8192, token: 11)
        #expect(throws: SystemError.self) { try ring.write(fd, from: b, count: 4096, at: 0, token: 11) }
        var done: [IORingCompletion] = []
        while done.count < 2 { done += try ring.completions(waitingFor: 2 - done.count) }
        #expect(Set(done.map(\.token)) == [10, 11])
        #expect(done.allSatisfy { $0.result == 4096 })
        #expect(ring.inFlightCount == 0)

        let back = try AlignedBuffer(count: 3 * 4096)
        try ring.read(fd, into: back, at: 0, token: 12)
        let read = try ring.completions(waitingFor: 1)
        #expect(read == [IORingCompletion(token: 12, result: 3 * 4096)])
        #expect(back.bytes == pattern(4096, seed: 1) + [UInt8](repeating: 0, count: 4096) + pattern(4096, seed: 2))

        // Errors come back as -errno in the completion, not as throws.
        let bad = FileDescriptor(rawValue: 9999, name: "bad")
        try ring.read(bad, into: back, at: 0, token: 13)
        #expect(try ring.completions(waitingFor: 1) == [IORingCompletion(token: 13, result: -EBADF)])
    }

    @Test func pollCompletesWhenAPipeBecomesReadable() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let r = FileDescriptor(rawValue: fds[0], name: "pipe r"), w = FileDescriptor(rawValue: fds[1], name: "pipe w")
        defer { try? r.close(); try? w.close() }
        let ring = try IORing(entries: 4)
        try ring.poll(r, token: 7)
        try ring.submit()
        #expect(try ring.completions(waitingFor: 0).isEmpty)
        try w.write([42])
        let c = try ring.completions(waitingFor: 1)
        #expect(c.count == 1 && c[0].token == 7 && c[0].result & 0x001 != 0)
    }
}
