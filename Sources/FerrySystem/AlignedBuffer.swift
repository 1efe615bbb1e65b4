internal import CFerry

/// A heap buffer whose address is aligned (page-aligned by default), for direct I/O.
///
/// Writes into a cachefiles anonymous fd go to the backing file with direct I/O, so the
/// buffer address, the file offset and the length must all be multiples of the block size
/// (see `Kernel-Notes/cachefiles-ondemand.md`). Anonymous memory from `posix_memalign`
/// satisfies the address part.
///
/// The buffer owns its memory and frees it on `deinit`. It is a class so that an `IORing`
/// can keep it alive while the kernel reads or writes it; do not touch its bytes while an
/// I/O on it is in flight.
public final class AlignedBuffer {
    /// Size in bytes.
    public let count: Int
    /// Alignment of the first byte, a power of two.
    public let alignment: Int
    let base: UnsafeMutableRawPointer

    /// The page size of this machine (`sysconf(_SC_PAGESIZE)`).
    public static let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Allocates `count` zeroed bytes aligned to `alignment`. The corresponding C function is
    /// `posix_memalign`.
    public init(count: Int, alignment: Int = AlignedBuffer.pageSize) throws {
        guard count > 0 else { throw SystemError.invalidArgument("buffer size \(count)", reason: "must be positive") }
        guard alignment > 0, alignment & (alignment - 1) == 0, alignment % MemoryLayout<UnsafeRawPointer>.size == 0 else {
            throw SystemError.invalidArgument("alignment \(alignment)", reason: "must be a power of two and a multiple of the pointer size")
        }
        var raw: UnsafeMutableRawPointer?
        let rc = cferry_posix_memalign(&raw, alignment, count)
        guard rc == 0, let raw else { throw SystemError.syscall("posix_memalign \(count) bytes", errno: rc) }
        // Safe because: raw points at count freshly allocated bytes.
        memset(raw, 0, count)
        self.base = raw
        self.count = count
        self.alignment = alignment
    }

    deinit { free(base) }

    /// The byte at `index` (bounds-checked).
    public subscript(index: Int) -> UInt8 {
        get {
            precondition(index >= 0 && index < count, "AlignedBuffer index \(index) out of 0..<\(count)")
            // Safe because: index was checked against count.
            return base.load(fromByteOffset: index, as: UInt8.self)
        }
        set {
            precondition(index >= 0 && index < count, "AlignedBuffer index \(index) out of 0..<\(count)")
            // Safe because: index was checked against count.
            base.storeBytes(of: newValue, toByteOffset: index, as: UInt8.self)
        }
    }

    /// Copies `bytes` into the buffer starting at `offset`.
    public func copy<C: Collection<UInt8>>(from bytes: C, at offset: Int = 0) throws {
        guard offset >= 0, bytes.count <= count - offset else {
            throw SystemError.invalidArgument("copy of \(bytes.count) bytes at \(offset)", reason: "buffer holds \(count) bytes")
        }
        // Safe because: the destination range offset..<offset+bytes.count was checked above.
        let dst = UnsafeMutableRawBufferPointer(start: base + offset, count: bytes.count)
        dst.copyBytes(from: bytes)
    }

    /// Sets `range` to zero (e.g. the tail past the data before an aligned write).
    public func zero(_ range: Range<Int>) {
        let r = range.clamped(to: 0..<count)
        // Safe because: r lies within 0..<count.
        if !r.isEmpty { memset(base + r.lowerBound, 0, r.count) }
    }

    /// A copy of the bytes in `range`.
    public func bytes(_ range: Range<Int>) -> [UInt8] {
        let r = range.clamped(to: 0..<count)
        // Safe because: r lies within 0..<count and the pointer does not escape.
        return Array(UnsafeRawBufferPointer(start: base + r.lowerBound, count: r.count))
    }

    /// A copy of all bytes.
    public var bytes: [UInt8] { bytes(0..<count) }

    /// Whether the address is a multiple of `n`.
    public func isAddressAligned(to n: Int) -> Bool { Int(bitPattern: base) % n == 0 }

    /// Calls `body` with the raw memory; the pointer must not escape.
    func withRawPointer<R>(_ body: (UnsafeMutableRawPointer) throws -> R) rethrows -> R {
        try body(base)
    }
}

extension FileDescriptor {
    /// Writes the first `count` bytes of `buffer` at `offset` (a `pwrite` loop). With direct
    /// I/O targets, `count` and `offset` must be block multiples.
    public func write(_ buffer: AlignedBuffer, count: Int, at offset: UInt64) throws {
        guard count >= 0, count <= buffer.count else {
            throw SystemError.invalidArgument("write of \(count) bytes", reason: "buffer holds \(buffer.count) bytes")
        }
        var done = 0
        while done < count {
            let n = try buffer.withRawPointer { base in
                // Safe because: done..<count lies within the buffer.
                try retrying("pwrite \(name) at \(offset + UInt64(done))") {
                    pwrite(rawValue, base + done, count - done, off_t(offset) + off_t(done))
                }
            }
            if n == 0 { throw SystemError.syscall("pwrite \(name) wrote nothing", errno: EIO) }
            done += n
        }
    }

    /// Reads into the first `count` bytes of `buffer` from `offset`; returns the bytes read
    /// (fewer only at end of file).
    public func read(into buffer: AlignedBuffer, count: Int, at offset: UInt64) throws -> Int {
        guard count >= 0, count <= buffer.count else {
            throw SystemError.invalidArgument("read of \(count) bytes", reason: "buffer holds \(buffer.count) bytes")
        }
        var done = 0
        while done < count {
            let n = try buffer.withRawPointer { base in
                // Safe because: done..<count lies within the buffer.
                try retrying("pread \(name)") { pread(rawValue, base + done, count - done, off_t(offset) + off_t(done)) }
            }
            if n == 0 { break }
            done += n
        }
        return done
    }
}
