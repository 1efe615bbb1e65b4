/// A request from cachefiles in on-demand mode, read from `/dev/cachefiles`.
///
/// `struct cachefiles_msg`, 16-byte header (`include/uapi/linux/cachefiles.h`, Linux 6.1):
/// `msg_id u32 @0`, `opcode u32 @4`, `len u32 @8` (header plus payload), `object_id u32 @12`,
/// then the payload.
public struct CachefilesMessage: Sendable, Equatable {
    /// Identifies the request in the reply (`copen <msg_id>,…`, `CACHEFILES_IOC_READ_COMPLETE`).
    public var messageID: UInt32
    /// Identifies the cache object (one per opened blob/cookie) for CLOSE and READ.
    public var objectID: UInt32
    /// What the kernel asks.
    public var request: Request

    public init(messageID: UInt32, objectID: UInt32, request: Request) {
        self.messageID = messageID
        self.objectID = objectID
        self.request = request
    }

    /// The payload, by opcode (`enum cachefiles_opcode`: OPEN 0, CLOSE 1, READ 2).
    public enum Request: Sendable, Equatable {
        case open(CachefilesOpen)
        case close
        case read(offset: UInt64, length: UInt64)
        /// An opcode newer than this code knows; answer nothing and log it.
        case unknown(opcode: UInt32, payload: [UInt8])
    }

    /// Size of the header.
    public static let headerSize = 16
    /// `CACHEFILES_MSG_MAX_SIZE`: a read buffer of this size always holds one message.
    public static let maxSize = 1024
    /// `struct cachefiles_read`, 16 bytes: `off u64 @0`, `len u64 @8`.
    static let readPayloadSize = 16

    /// Parses one message: one `read(2)` of the device returns exactly one.
    public static func parse(_ bytes: ArraySlice<UInt8>) throws -> CachefilesMessage {
        func bad(_ reason: String) -> SystemError { .malformedKernelMessage("cachefiles message", reason: reason) }
        guard bytes.count >= headerSize else { throw bad("\(bytes.count) bytes, less than the 16-byte header") }
        let b = bytes.startIndex
        let id = KernelLE.u32(bytes, b)
        let opcode = KernelLE.u32(bytes, b + 4)
        let length = Int(KernelLE.u32(bytes, b + 8))
        let object = KernelLE.u32(bytes, b + 12)
        guard length >= headerSize, length <= bytes.count else {
            throw bad("len \(length) outside 16...\(bytes.count) (bytes read)")
        }
        let payload = bytes[(b + headerSize)..<(b + length)]
        let request: Request
        switch opcode {
        case 0: request = .open(try CachefilesOpen.parse(payload))
        case 1: request = .close
        case 2:
            guard payload.count >= readPayloadSize else { throw bad("READ payload of \(payload.count) bytes, expected 16") }
            request = .read(offset: KernelLE.u64(payload, payload.startIndex), length: KernelLE.u64(payload, payload.startIndex + 8))
        default: request = .unknown(opcode: opcode, payload: Array(payload))
        }
        return CachefilesMessage(messageID: id, objectID: object, request: request)
    }
}

/// The OPEN payload (`struct cachefiles_open`, 16 bytes + keys): `volume_key_size u32 @0`,
/// `cookie_key_size u32 @4`, `fd u32 @8`, `flags u32 @12`, then the volume key (a
/// NUL-terminated string; its size counts the NUL) and the cookie key (binary).
public struct CachefilesOpen: Sendable, Equatable {
    /// The volume key without its NUL, e.g. `erofs,<domain_id or fsid>`.
    public var volumeKey: String
    /// The cookie key: for EROFS, the fsid (primary) or a device slot's tag.
    public var cookieKey: [UInt8]
    /// The anonymous fd the kernel installed in the reader's fd table for this object. The
    /// daemon owns it: write data into it, and close it on CLOSE.
    public var fd: Int32
    public var flags: UInt32

    public init(volumeKey: String, cookieKey: [UInt8], fd: Int32, flags: UInt32) {
        self.volumeKey = volumeKey
        self.cookieKey = cookieKey
        self.fd = fd
        self.flags = flags
    }

    /// The cookie key as text (EROFS uses printable fsids and tags), dropping trailing NULs.
    public var cookieKeyString: String {
        var key = cookieKey
        while key.last == 0 { key.removeLast() }
        return String(decoding: key, as: UTF8.self)
    }

    static let fixedSize = 16

    static func parse(_ payload: ArraySlice<UInt8>) throws -> CachefilesOpen {
        func bad(_ reason: String) -> SystemError { .malformedKernelMessage("cachefiles OPEN", reason: reason) }
        guard payload.count >= fixedSize else { throw bad("payload of \(payload.count) bytes, less than 16") }
        let b = payload.startIndex
        let volumeSize = Int(KernelLE.u32(payload, b))
        let cookieSize = Int(KernelLE.u32(payload, b + 4))
        let fd = Int32(bitPattern: KernelLE.u32(payload, b + 8))
        let flags = KernelLE.u32(payload, b + 12)
        let keys = payload.count - fixedSize
        guard volumeSize <= keys, cookieSize <= keys - volumeSize else {
            throw bad("volume key \(volumeSize) + cookie key \(cookieSize) bytes exceed the \(keys) bytes present")
        }
        var volume = payload[(b + fixedSize)..<(b + fixedSize + volumeSize)]
        if volume.last == 0 { volume = volume.dropLast() }
        guard !volume.contains(0) else { throw bad("volume key has a NUL before its end") }
        let cookieStart = b + fixedSize + volumeSize
        return CachefilesOpen(volumeKey: String(decoding: volume, as: UTF8.self),
                              cookieKey: Array(payload[cookieStart..<(cookieStart + cookieSize)]),
                              fd: fd, flags: flags)
    }
}

extension CachefilesMessage {
    /// Encodes a message as the kernel lays it out (for tests and fakes).
    public func encoded() -> [UInt8] {
        var payload: [UInt8] = []
        let opcode: UInt32
        switch request {
        case let .open(o):
            opcode = 0
            let volume = Array(o.volumeKey.utf8) + [0]
            payload = [UInt8](repeating: 0, count: CachefilesOpen.fixedSize)
            KernelLE.store(UInt32(volume.count), into: &payload, at: 0)
            KernelLE.store(UInt32(o.cookieKey.count), into: &payload, at: 4)
            KernelLE.store(UInt32(bitPattern: o.fd), into: &payload, at: 8)
            KernelLE.store(o.flags, into: &payload, at: 12)
            payload += volume + o.cookieKey
        case .close:
            opcode = 1
        case let .read(offset, length):
            opcode = 2
            payload = [UInt8](repeating: 0, count: Self.readPayloadSize)
            KernelLE.store(offset, into: &payload, at: 0)
            KernelLE.store(length, into: &payload, at: 8)
        case let .unknown(op, bytes):
            opcode = op
            payload = bytes
        }
        var out = [UInt8](repeating: 0, count: Self.headerSize)
        KernelLE.store(messageID, into: &out, at: 0)
        KernelLE.store(opcode, into: &out, at: 4)
        KernelLE.store(UInt32(Self.headerSize + payload.count), into: &out, at: 8)
        KernelLE.store(objectID, into: &out, at: 12)
        return out + payload
    }
}
