import Foundation
import Testing
@testable import FerrySystem

/// A file-backed EROFS mount whose extra device is a sparse cache file, filled on demand from
/// fanotify pre-content events: the fanotify backend's data path, natively on this host.
@Suite(.serialized) struct FanotifyEROFSTests {
    static var supported: Bool {
        FanotifyKernelTests.supported && FileManager.default.isExecutableFile(atPath: "/usr/bin/mkfs.erofs")
    }

    static func run(_ command: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        try p.run()
        p.waitUntilExit()
        if p.terminationStatus != 0 { throw SystemError.invalidArgument("command \(command)", reason: "exit \(p.terminationStatus)") }
    }

    @Test(.enabled(if: supported, "needs root, mkfs.erofs and fanotify pre-content (Linux 6.14+)"))
    func everyByteOfAChunkedImageIsServedThroughPreAccessEvents() throws {
        let dir = try kernelScratchDirectory("fan-erofs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let src = dir + "/src", mnt = dir + "/mnt"
        try FileManager.default.createDirectory(atPath: src + "/sub", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let files: [String: [UInt8]] = [
            "big.bin": pattern(200_000, seed: 1),
            "sub/page.bin": pattern(4096, seed: 2),
            "tiny.txt": Array("hello\n".utf8),
        ]
        for (name, bytes) in files { try Data(bytes).write(to: URL(fileURLWithPath: src + "/" + name)) }
        try Self.run("mkfs.erofs --chunksize=4096 --blobdev=\(dir)/blob.img \(dir)/img.erofs \(src) >/dev/null 2>&1")

        let blob = try FileDescriptor.open(dir + "/blob.img", .readOnly)
        defer { try? blob.close() }
        let cachePath = dir + "/cache.blob"
        let cache = try FileDescriptor.open(cachePath, .createExclusive)
        try cache.truncate(to: try blob.size())
        try cache.close()

        let group = try FanotifyGroup.preContent(nonBlocking: true)
        defer { try? group.close() }
        try group.mark(cachePath)
        try Mount.erofs(file: dir + "/img.erofs", devices: [cachePath], at: mnt)
        defer { try? Mount.unmount(mnt, flags: .detach) }

        for (name, expected) in files.sorted(by: { $0.key < $1.key }) {
            let reader = readOnThread(mnt + "/" + name, offset: 0, count: expected.count + 10)
            var served = 0
            while reader.current == nil {
                for event in try group.readEvents() {
                    guard let range = event.range else {
                        try group.finish(event, .denyWithErrno(EIO))
                        Issue.record("event without range: \(event)")
                        continue
                    }
                    let count = Int(range.count)
                    let buffer = try AlignedBuffer(count: max(count, 1))
                    let n = try blob.read(into: buffer, count: count, at: range.offset)
                    try FanotifyGroup.fill(eventFD: event.fd, from: buffer, count: n, at: range.offset)
                    try group.finish(event, .allow)
                    served += 1
                }
                usleep(1000)
            }
            #expect(served > 0, "reading \(name) raised events on the cache file")
            #expect(try reader.wait()?.get() == expected, "\(name) read back through the mount")
        }
        // The cache now holds what was read: same bytes as the blob where it was filled. Unmark
        // first: a plain read of the marked file would raise an event nobody serves now.
        try group.unmark(cachePath)
        let filled = try FileDescriptor.open(cachePath, .readOnly)
        defer { try? filled.close() }
        let size = Int(try blob.size())
        #expect(try filled.read(at: 0, count: size) == (try blob.read(at: 0, count: size)))
    }
}
