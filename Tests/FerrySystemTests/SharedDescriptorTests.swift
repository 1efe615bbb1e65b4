import FerrySystem
import Glibc
import Testing

/// A retired descriptor stays open while a use is in progress and closes with the last one:
/// the fscache backend closed an object's fd on the kernel's CLOSE while READ fills could still
/// write to that number, and the fanotify backend closed an evicted cache file after a fixed 60 s.
@Suite struct SharedDescriptorTests {
    static func isOpen(_ fd: FileDescriptor) -> Bool { fcntl(fd.rawValue, F_GETFD) != -1 }

    @Test func closesAfterTheLastUseOnceRetired() throws {
        let shared = SharedDescriptor(try FileDescriptor.open("/dev/null", .readOnly))
        #expect(shared.acquire())
        #expect(shared.acquire())
        shared.retire()
        #expect(!shared.acquire(), "no new use after retiring")
        shared.release()
        #expect(Self.isOpen(shared.descriptor) && !shared.isClosed, "a use is still in progress")
        shared.release()
        #expect(shared.isClosed && !Self.isOpen(shared.descriptor))
    }

    @Test func closesAtOnceWhenUnused() throws {
        let shared = SharedDescriptor(try FileDescriptor.open("/dev/null", .readOnly))
        #expect(shared.acquire())
        shared.release()
        #expect(Self.isOpen(shared.descriptor))
        shared.retire()
        #expect(shared.isClosed && !Self.isOpen(shared.descriptor))
        shared.retire()
    }
}
