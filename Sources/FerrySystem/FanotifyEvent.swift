/// Constants of the fanotify pre-content API (Linux 6.14+) that Debian 12's uapi header
/// (linux-libc-dev 6.1) predates. Values from `include/uapi/linux/fanotify.h` of Linux 6.14+:
/// `FAN_PRE_ACCESS 0x00100000`, `FAN_EVENT_INFO_TYPE_RANGE 6`, `FAN_ERRNO_BITS 8`,
/// `FAN_ERRNO_SHIFT (32 - FAN_ERRNO_BITS)`, `FAN_DENY_ERRNO(err) (FAN_DENY | (err & 0xff) << 24)`.
public enum FanotifyConstants {
    /// `FAN_CLASS_PRE_CONTENT`: the group is asked before content is read.
    public static let classPreContent: UInt32 = 0x0000_0008
    public static let cloexec: UInt32 = 0x0000_0001
    public static let nonblock: UInt32 = 0x0000_0002
    /// `FAN_PRE_ACCESS`: a pre-content permission event, raised before a read (and before a
    /// write) touches a range of a marked file; carries a range info record.
    public static let preAccess: UInt64 = 0x0010_0000
    /// `FAN_OPEN_PERM`.
    public static let openPermission: UInt64 = 0x0001_0000
    /// `FAN_ACCESS_PERM`.
    public static let accessPermission: UInt64 = 0x0002_0000
    /// `FAN_Q_OVERFLOW`: the queue overflowed; no fd.
    public static let queueOverflow: UInt64 = 0x0000_4000
    /// `FANOTIFY_METADATA_VERSION`.
    public static let metadataVersion: UInt8 = 3
    /// `FAN_EVENT_INFO_TYPE_RANGE`.
    public static let infoTypeRange: UInt8 = 6
    public static let allow: UInt32 = 0x01
    public static let deny: UInt32 = 0x02
    /// `FAN_NOFD`.
    public static let noFD: Int32 = -1
    public static let markAdd: UInt32 = 0x0000_0001
    public static let markRemove: UInt32 = 0x0000_0002
    public static let markFlush: UInt32 = 0x0000_0080
}

/// The answer to a permission event (`struct fanotify_response`, 8 bytes: `__s32 fd`,
/// `__u32 response`).
public enum FanotifyResponse: Sendable, Equatable {
    /// `FAN_ALLOW`: the access proceeds (the range must have been filled first).
    case allow
    /// `FAN_DENY`: the access fails with `EPERM`.
    case deny
    /// `FAN_DENY_ERRNO(errno)`: the access fails with `errno`. Linux 6.14+ accepts it only on
    /// pre-content groups and only for EIO, EPERM, EBUSY, ETXTBSY, EAGAIN, ENOSPC, EDQUOT
    /// (`process_access_response` in `fs/notify/fanotify/fanotify_user.c`); else `EINVAL`.
    case denyWithErrno(Int32)

    /// The `response` word.
    public var rawValue: UInt32 {
        switch self {
        case .allow: return FanotifyConstants.allow
        case .deny: return FanotifyConstants.deny
        case let .denyWithErrno(e): return FanotifyConstants.deny | ((UInt32(bitPattern: e) & 0xff) << 24)
        }
    }

    /// The 8 bytes written to the group fd for the event whose fd is `fd`.
    public func encoded(fd: Int32) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 8)
        KernelLE.store(UInt32(bitPattern: fd), into: &out, at: 0)
        KernelLE.store(rawValue, into: &out, at: 4)
        return out
    }
}

/// One event read from a fanotify group (`struct fanotify_event_metadata`, 24 bytes, plus
/// info records).
///
/// Layout (all native-endian, which is little-endian on every Linux Ferry supports):
/// `event_len u32 @0`, `vers u8 @4`, `reserved u8 @5`, `metadata_len u16 @6`, `mask u64 @8`,
/// `fd s32 @16`, `pid s32 @20`.
public struct FanotifyEvent: Sendable, Equatable {
    /// The event bits (`FAN_PRE_ACCESS`, ...).
    public var mask: UInt64
    /// An fd opened by the kernel on the marked file, or `FAN_NOFD`. Reads and writes through
    /// it raise no events. The receiver owns it and must close it after answering.
    public var fd: Int32
    /// The pid (or tid) of the process that caused the event.
    public var pid: Int32
    /// The byte range from the `FAN_EVENT_INFO_TYPE_RANGE` record, if present.
    public var range: FanotifyRange?
    /// Info records of other types, as (type, record bytes including its 4-byte header).
    public var otherRecords: [FanotifyInfoRecord]
    /// Set when the info records after the metadata failed a length check; the event's fd is
    /// still valid and must still be answered.
    public var infoProblem: String?

    public init(mask: UInt64, fd: Int32, pid: Int32, range: FanotifyRange? = nil,
                otherRecords: [FanotifyInfoRecord] = [], infoProblem: String? = nil) {
        self.mask = mask
        self.fd = fd
        self.pid = pid
        self.range = range
        self.otherRecords = otherRecords
        self.infoProblem = infoProblem
    }

    /// Whether the event waits for an answer.
    public var isPermissionEvent: Bool {
        mask & (FanotifyConstants.preAccess | FanotifyConstants.openPermission | FanotifyConstants.accessPermission | 0x0004_0000) != 0
    }

    /// Size of `struct fanotify_event_metadata`.
    public static let metadataSize = 24
}

/// `struct fanotify_event_info_range`, 24 bytes: header (`info_type u8 @0`, `pad u8 @1`,
/// `len u16 @2`), `pad u32 @4`, `offset u64 @8`, `count u64 @16`.
public struct FanotifyRange: Sendable, Equatable {
    public var offset: UInt64
    public var count: UInt64
    public init(offset: UInt64, count: UInt64) {
        self.offset = offset
        self.count = count
    }
    public static let size = 24
}

/// An info record Ferry does not interpret.
public struct FanotifyInfoRecord: Sendable, Equatable {
    public var type: UInt8
    public var bytes: [UInt8]
    public init(type: UInt8, bytes: [UInt8]) {
        self.type = type
        self.bytes = bytes
    }
}

extension FanotifyEvent {
    /// Parses every event in `bytes` (the result of one `read(2)` on a group fd).
    ///
    /// Every length is checked before it is used. Info record problems are reported per event
    /// (`infoProblem`) because the event still holds an fd that must be answered; a broken
    /// metadata header throws, since the following events cannot be located.
    public static func parse(_ bytes: ArraySlice<UInt8>) throws -> [FanotifyEvent] {
        var events: [FanotifyEvent] = []
        var at = bytes.startIndex
        while at < bytes.endIndex {
            let remaining = bytes.endIndex - at
            guard remaining >= metadataSize else {
                throw SystemError.malformedKernelMessage("fanotify event", reason: "\(remaining) trailing bytes, less than the 24-byte metadata")
            }
            let eventLength = Int(KernelLE.u32(bytes, at))
            let version = bytes[at + 4]
            let metadataLength = Int(KernelLE.u16(bytes, at + 6))
            guard version == FanotifyConstants.metadataVersion else {
                throw SystemError.malformedKernelMessage("fanotify event", reason: "metadata version \(version), expected \(FanotifyConstants.metadataVersion)")
            }
            guard eventLength >= metadataSize, eventLength <= remaining else {
                throw SystemError.malformedKernelMessage("fanotify event", reason: "event_len \(eventLength) outside 24...\(remaining)")
            }
            guard metadataLength >= metadataSize, metadataLength <= eventLength else {
                throw SystemError.malformedKernelMessage("fanotify event", reason: "metadata_len \(metadataLength) outside 24...\(eventLength)")
            }
            var event = FanotifyEvent(mask: KernelLE.u64(bytes, at + 8),
                                      fd: Int32(bitPattern: KernelLE.u32(bytes, at + 16)),
                                      pid: Int32(bitPattern: KernelLE.u32(bytes, at + 20)))
            parseInfo(bytes[(at + metadataLength)..<(at + eventLength)], into: &event)
            events.append(event)
            at += eventLength
        }
        return events
    }

    private static func parseInfo(_ info: ArraySlice<UInt8>, into event: inout FanotifyEvent) {
        var at = info.startIndex
        while at < info.endIndex {
            let remaining = info.endIndex - at
            guard remaining >= 4 else {
                event.infoProblem = "\(remaining) trailing bytes, less than an info header"
                return
            }
            let type = info[at]
            let length = Int(KernelLE.u16(info, at + 2))
            guard length >= 4, length <= remaining else {
                event.infoProblem = "info record type \(type) has len \(length) outside 4...\(remaining)"
                return
            }
            if type == FanotifyConstants.infoTypeRange {
                guard length >= FanotifyRange.size else {
                    event.infoProblem = "range record of \(length) bytes, expected \(FanotifyRange.size)"
                    return
                }
                event.range = FanotifyRange(offset: KernelLE.u64(info, at + 8), count: KernelLE.u64(info, at + 16))
            } else {
                event.otherRecords.append(FanotifyInfoRecord(type: type, bytes: Array(info[at..<(at + length)])))
            }
            at += length
        }
    }
}

/// Explicit little-endian loads and stores at byte offsets of a buffer.
enum KernelLE {
    static func u16(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt16 {
        UInt16(b[at]) | UInt16(b[at + 1]) << 8
    }
    static func u32(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) }
    }
    static func u64(_ b: ArraySlice<UInt8>, _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) }
    }
    static func store(_ v: UInt32, into b: inout [UInt8], at: Int) {
        for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }
    static func store(_ v: UInt16, into b: inout [UInt8], at: Int) {
        for i in 0..<2 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt16(i))) }
    }
    static func store(_ v: UInt64, into b: inout [UInt8], at: Int) {
        for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }
}
