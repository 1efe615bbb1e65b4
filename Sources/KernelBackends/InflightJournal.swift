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
        var slot = 0
        while (slot + 1) * slotSize <= bytes.count {
            let base = slot * slotSize
            func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[base + at + $1]) << (8 * UInt64($1)) } }
            func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[base + at + $1]) << (8 * UInt32($1)) } }
            if u32(0) == magic {
                entries.append(Entry(fd: Int32(bitPattern: u32(4)), file: FileIdentity(device: u64(8), inode: u64(16)),
                                     offset: u64(24), count: u64(32)))
            }
            slot += 1
        }
        return entries
    }

    /// Records `entry`; returns its slot, or nil when every slot is taken.
    public func record(_ entry: Entry) -> Int? {
        guard let slot = free.withLock({ $0.popLast() }) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.slotSize)
        func put<T: FixedWidthInteger>(_ value: T) { for i in 0..<(T.bitWidth / 8) { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * i))) } }
        put(Self.magic); put(entry.fd); put(entry.file.device); put(entry.file.inode); put(entry.offset); put(entry.count)
        guard (try? file.write(bytes, at: UInt64(slot * Self.slotSize))) != nil else {
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
