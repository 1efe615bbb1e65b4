import Blob
public import FerrySystem
import Foundation
import Synchronization

/// The fanotify permission events this ferryd has read and not answered yet, one 40-byte slot each
/// in a small file of the state directory, so that a successor can serve them after a crash
/// instead of failing them: the kernel matches a response by the event's fd number only
/// (`process_access_response`), so the successor fills the recorded range of the recorded cache
/// file and answers that number. A slot is written before the fill starts and cleared *before*
/// the answer is written: an event whose slot is set is certainly still pending, and its fd number
/// cannot have been reused by another pending event (it stays open until answered).
///
/// Slot (little-endian): magic "FJ01" (u32), event fd (i32), cache file device (u64) and inode
/// (u64), range offset (u64) and length (u64). A zero magic is a free slot.
public final class InflightJournal: Sendable {
    /// One recorded event.
    public struct Entry: Sendable, Equatable {
        public var fd: Int32
        public var file: FileIdentity
        public var offset: UInt64
        public var count: UInt64
    }

    static let slotSize = 40
    /// Events in flight at once that are journaled; beyond, events are served unjournaled (a
    /// crash then fails them with EIO, as without a journal).
    public static let slotCount = 4096
    static let magic: UInt32 = 0x3130_4A46  // "FJ01"

    private let file: FileDescriptor
    private let free: Mutex<[Int]>

    /// Opens `path` afresh (every slot free). Read a predecessor's entries with `recover` first.
    public init(path: String) throws {
        file = try FileDescriptor.open(path, .createTruncate, permissions: 0o600)
        try file.truncate(to: UInt64(Self.slotCount * Self.slotSize))
        free = Mutex(Array((0..<Self.slotCount).reversed()))
    }

    /// The events a previous ferryd left in the journal at `path` (none when there is no file).
    public static func recover(path: String) -> [Entry] {
        guard let fd = try? FileDescriptor.open(path, .readOnly) else { return [] }
        defer { try? fd.close() }
        guard let bytes = try? fd.read(at: 0, count: slotCount * slotSize) else { return [] }
        var entries: [Entry] = []
        var r = LittleEndianReader(bytes)
        // A slot cut short at the end of the file is no entry: the reader throws there.
        while let slot = try? (r.u32(), r.u32(), r.u64(), r.u64(), r.u64(), r.u64()) {
            guard slot.0 == magic else { continue }
            entries.append(Entry(fd: Int32(bitPattern: slot.1), file: FileIdentity(device: slot.2, inode: slot.3),
                                 offset: slot.4, count: slot.5))
        }
        return entries
    }

    /// Records `entry`; returns its slot, or nil when every slot is taken.
    public func record(_ entry: Entry) -> Int? {
        guard let slot = free.withLock({ $0.popLast() }) else { return nil }
        var w = LittleEndianWriter(capacity: Self.slotSize)
        w.u32(Self.magic)
        w.u32(UInt32(bitPattern: entry.fd))
        w.u64(entry.file.device)
        w.u64(entry.file.inode)
        w.u64(entry.offset)
        w.u64(entry.count)
        guard (try? file.write(w.bytes, at: UInt64(slot * Self.slotSize))) != nil else {
            free.withLock { $0.append(slot) }
            return nil
        }
        return slot
    }

    /// Frees `slot` (before the event is answered).
    public func clear(_ slot: Int) {
        _ = try? file.write([0, 0, 0, 0], at: UInt64(slot * Self.slotSize))
        free.withLock { $0.append(slot) }
    }
}
