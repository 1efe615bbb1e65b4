import Foundation
import Testing
@testable import EROFS

/// The host kernel mounts Ferry's images and shows exactly the model: every byte, mode,
/// owner, nanosecond mtime, xattr, symlink target, device number and hard-link grouping.
@Suite(.serialized) struct KernelMountTests {
    /// "loop": util-linux mount with loop devices (also for the extra devices).
    /// "file": mount(2) on the image file, extra devices as plain files (file-backed mode).
    @Test(arguments: ["loop", "file"])
    func kernelShowsTheSelfContainedTree(mode: String) throws {
        if let reason = mountUnavailableReason() {
            print("skipping kernel mount test: \(reason)")
            return
        }
        let fixture = RichFixture.selfContained()
        try mountAndCompare(fixture, mode: mode)
    }

    @Test(arguments: ["loop", "file"])
    func kernelShowsChunkedFilesOnExtraDevices(mode: String) throws {
        if let reason = mountUnavailableReason() {
            print("skipping kernel mount test: \(reason)")
            return
        }
        // Loop devices: avoid the layout that trips the kernel's cross-device bio merge (see
        // RichFixture.withDevices); the file-backed mode, which the fanotify backend uses, gets it.
        try mountAndCompare(RichFixture.withDevices(sectorContiguousAcrossDevices: mode == "file"), mode: mode)
    }

    private func mountAndCompare(_ fixture: RichFixture, mode: String) throws {
        let scratch = try Scratch("mount-\(mode)")
        defer { scratch.cleanup() }
        let (image, devices) = try fixture.materialize(in: scratch)
        let encoded = try ImageWriter.encode(fixture.tree)
        let mountPoint = scratch.path("mnt")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        var loops: [String] = []
        defer { for loop in loops { _ = try? run("losetup", ["-d", loop]) } }
        let mounted: (status: Int32, output: String)
        if mode == "loop" {
            for device in devices {
                let attach = try run("losetup", ["-f", "--show", device])
                try #require(attach.status == 0, "losetup: \(attach.output)")
                loops.append(attach.output.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            let options = (["loop"] + loops.map { "device=\($0)" }).joined(separator: ",")
            mounted = try run("mount", ["-t", "erofs", "-o", options, image, mountPoint])
        } else {
            mounted = try mountFileBacked(image: image, at: mountPoint,
                                          options: devices.map { "device=\($0)" }.joined(separator: ","))
        }
        try #require(mounted.status == 0, "mount (\(mode)) failed: \(mounted.output)")
        defer { _ = try? run("umount", [mountPoint]) }
        let listed = try listTree(mountPoint)
        let problems = try compare(listed, with: fixture, nids: encoded.nids, rules: Comparison()) { label in
            try readFileRange(mountPoint + label)
        }
        #expect(problems.count == 0, "\(problems.prefix(10).joined(separator: "\n"))")
        #expect(listed.count == fixture.paths().count && listed.count > 3000)
        // The comparison itself must notice a difference: alter one node of the model.
        var altered = fixture
        altered.tree.nodes[1].mtimeNanoseconds += 1
        altered.tree.nodes[1].xattrs.append(ExtendedAttribute(name: bytes("user.extra"), value: []))
        let noticed = try compare(listed, with: altered, nids: encoded.nids, rules: Comparison()) { label in
            try readFileRange(mountPoint + label)
        }
        #expect(noticed.count == 2, "\(noticed)")
    }
}
