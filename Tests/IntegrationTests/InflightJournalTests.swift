import FerrySystem
import Foundation
@testable import KernelBackends
import Testing

/// The in-flight journal's slots survive the process that wrote them: what is recorded and not
/// cleared is what a successor recovers, field for field.
@Suite struct InflightJournalTests {
    @Test func recordedAndUnclearedEntriesAreRecovered() throws {
        let path = NSTemporaryDirectory() + "ferry-journal-\(UUID().uuidString)"
        defer { unlink(path) }
        let journal = try InflightJournal(path: path)
        let kept = InflightJournal.Entry(fd: 1_234_567, file: FileIdentity(device: 0x0102_0304_0506_0708, inode: UInt64.max - 1),
                                         offset: 1 << 40, count: 65_536)
        let answered = InflightJournal.Entry(fd: 7, file: FileIdentity(device: 1, inode: 2), offset: 0, count: 4096)
        let answeredSlot = try #require(journal.record(answered))
        _ = try #require(journal.record(kept))
        journal.clear(answeredSlot)
        #expect(InflightJournal.recover(path: path) == [kept])
        #expect(InflightJournal.recover(path: path + ".missing").isEmpty)
        _ = try InflightJournal(path: path)
        #expect(InflightJournal.recover(path: path).isEmpty, "a new journal starts empty")
    }
}
