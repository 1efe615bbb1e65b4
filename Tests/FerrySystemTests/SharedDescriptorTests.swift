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

/// Placeholders take exactly the wanted numbers that are free and leave used ones alone. The
/// first version checked a number free, opened /dev/null (which got that very number, the lowest
/// free one), dup2'ed it onto itself and closed it: the "placeholder" was closed, and closing it
/// again later closed whatever had taken the number since (NIO's eventfd: ferryd crashed).
@Suite struct DescriptorPlaceholderTests {
    @Test func occupiesFreeNumbersAndLeavesUsedOnesAlone() throws {
        let used = try FileDescriptor.open("/dev/null", .readOnly)
        defer { try? used.close() }
        // The lowest free number right now, and one well above it.
        let probe = try FileDescriptor.open("/dev/null", .readOnly)
        let lowest = probe.rawValue
        try probe.close()
        let high = lowest + 50
        let held = FileDescriptor.occupy(numbers: [lowest, high, used.rawValue])
        // (Other tests run in this process: a wanted number another thread took meanwhile is in
        // use, and rightly not held.)
        #expect(Set(held.keys).isSubset(of: [lowest, high]) && held[used.rawValue] == nil)
        for number in [lowest, high] {
            #expect(held[number] != nil || fcntl(number, F_GETFD) != -1, "fd \(number) is held, or was taken by someone else")
        }
        for (number, placeholder) in held {
            #expect(placeholder.rawValue == number && fcntl(number, F_GETFD) != -1, "fd \(number) is held open")
        }
        #expect(fcntl(used.rawValue, F_GETFD) != -1, "a number in use is not touched")
        for placeholder in held.values { try placeholder.close() }
    }
}
