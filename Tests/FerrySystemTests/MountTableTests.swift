import Foundation
import Glibc
import Testing
@testable import FerrySystem

/// `MountTable`: the whole of `/proc/self/mounts`, however many pages procfs takes to hand it
/// out. Foundation's file reading stops after the first page (about 4 KiB), and a ferryd that
/// restarted on a node with more mounts than that did not re-attach the mounts listed after it
/// (found under systemd in the nspawn container, whose table is longer than the host's).
@Suite struct MountTableTests {
    @Test func escapedFieldsAreDecoded() {
        let table = MountTable(text: """
            /dev/vda / ext4 rw,relatime 0 0
            /state/images/a/bootstrap.erofs /run/with\\040space/and\\134backslash erofs ro 0 0
            none /tmp/odd\\011tab\\012newline tmpfs rw 0 0
            none /tmp/not\\9escape tmpfs rw 0 0
            """)
        #expect(table.entries.count == 4)
        #expect(table.mountpoints(ofType: "erofs") == ["/run/with space/and\\backslash"])
        #expect(table.contains(mountpoint: "/tmp/odd\ttab\nnewline"))
        #expect(table.contains(mountpoint: "/tmp/not\\9escape"))
    }

    /// 200 tmpfs mounts (well past one page of the table): each one is found, the last one
    /// included. Needs root (mount(2)).
    @Test func everyMountOfALongTableIsRead() throws {
        guard geteuid() == 0 else {
            print("SKIPPED: mounting needs root")
            return
        }
        let root = NSTemporaryDirectory() + "ferry-mounttable-\(UUID().uuidString.prefix(8))"
        var mounted: [String] = []
        defer {
            for path in mounted.reversed() { try? Mount.unmount(path, flags: .detach) }
            try? FileManager.default.removeItem(atPath: root)
        }
        for index in 0..<200 {
            let path = "\(root)/mount with a long name number \(index)"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            try Mount.mount(source: "ferry-test", target: path, type: "tmpfs", data: "size=4k")
            mounted.append(path)
        }
        let text = try readWholeFile("/proc/self/mounts")
        #expect(text.utf8.count > 3 * 4096, "the table spans several pages")
        let table = MountTable(text: text)
        let tmpfs = table.mountpoints(ofType: "tmpfs")
        let missing = mounted.filter { !tmpfs.contains($0) }
        #expect(missing.count == 0, "\(missing.count) of 200 mounts not in the table read, first: \(missing.first ?? "")")
        #expect(try MountTable.current().contains(mountpoint: mounted.last!))
    }
}
