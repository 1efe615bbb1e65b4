internal import CFerry
import Synchronization

/// An owned file descriptor with the handful of calls Ferry's data paths need.
///
/// Every call retries `EINTR` and turns `-1` into `SystemError.syscall` naming the call and
/// the path the descriptor was opened from. `close()` must be called exactly once.
public struct FileDescriptor: Sendable {
    /// The raw descriptor number.
    public let rawValue: Int32
    /// What the descriptor was opened from, for error messages.
    public let name: String

    /// Wraps an already open descriptor.
    public init(rawValue: Int32, name: String) {
        self.rawValue = rawValue
        self.name = name
    }

    /// How to open a file.
    public enum Mode: Sendable {
        case readOnly
        case readWrite
        /// Create or truncate, write only.
        case createTruncate
        /// Create a new file, failing if it exists (`O_EXCL`).
        case createExclusive
        /// Create if missing, read and write, keep existing contents.
        case createReadWrite
        /// A directory, read only (`O_DIRECTORY`), to fsync it.
        case directory
    }

    /// Opens `path`. The corresponding C function is `open`.
    public static func open(_ path: String, _ mode: Mode, permissions: UInt32 = 0o644) throws -> FileDescriptor {
        var flags: Int32 = O_CLOEXEC
        switch mode {
        case .readOnly: flags |= O_RDONLY
        case .readWrite: flags |= O_RDWR
        case .createTruncate: flags |= O_WRONLY | O_CREAT | O_TRUNC
        case .createExclusive: flags |= O_RDWR | O_CREAT | O_EXCL
        case .createReadWrite: flags |= O_RDWR | O_CREAT
        case .directory: flags |= O_RDONLY | O_DIRECTORY
        }
        let fd = try retrying("open \(path)") { cferry_open(path, flags, mode_t(permissions)) }
        return FileDescriptor(rawValue: fd, name: path)
    }

    /// Closes the descriptor. The corresponding C function is `close`.
    public func close() throws {
        // EINTR on close must not be retried on Linux: the descriptor is already gone.
        if CFerry.close(rawValue) != 0 && cferry_errno() != EINTR {
            throw SystemError.syscall("close \(name)", errno: cferry_errno())
        }
    }

    /// Reads up to `count` bytes at the current position; fewer only at end of file, or, with
    /// `partial`, whenever one `read(2)` returns fewer (for sockets and pipes).
    public func read(upTo count: Int, partial: Bool = false) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let n = try out.withUnsafeMutableBytes { dst in
                // Safe because: the destination range lies within out.
                try retrying("read \(name)") { CFerry.read(rawValue, dst.baseAddress! + filled, count - filled) }
            }
            if n == 0 { break }
            filled += n
            if partial { break }
        }
        out.removeSubrange(filled...)
        return out
    }

    /// Reads exactly `count` bytes at `offset` unless the file ends first.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        // A fresh, uninitialized array: no zeroing, and never a copy of a buffer someone else holds.
        var failure: (any Error)?
        let out = [UInt8](unsafeUninitializedCapacity: count) { dst, initialized in
            do {
                // Safe because: dst is the new array's capacity, count bytes.
                initialized = try preadFully(into: UnsafeMutableRawBufferPointer(dst), at: offset)
            } catch {
                failure = error
                initialized = 0
            }
        }
        if let failure { throw failure }
        return out
    }

    /// Fills `buffer` from `offset` (a `pread` loop); returns how many bytes it read.
    public func read(at offset: UInt64, into buffer: inout [UInt8]) throws -> Int {
        try buffer.withUnsafeMutableBytes { try preadFully(into: $0, at: offset) }
    }

    /// `pread` until `destination` is full or the file ends; returns the bytes read.
    private func preadFully(into destination: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        var filled = 0
        while filled < destination.count {
            // Safe because: the range written lies within destination.
            let n = try retrying("pread \(name)") {
                pread(rawValue, destination.baseAddress! + filled, destination.count - filled, off_t(offset) + off_t(filled))
            }
            if n == 0 { break }
            filled += n
        }
        return filled
    }

    /// Writes all of `bytes` at the current position.
    public func write(_ bytes: ArraySlice<UInt8>) throws {
        var done = 0
        while done < bytes.count {
            let n = try bytes.withUnsafeBytes { src in
                // Safe because: the source range lies within bytes.
                try retrying("write \(name)") { CFerry.write(rawValue, src.baseAddress! + done, src.count - done) }
            }
            done += n
        }
    }

    /// Writes all of `bytes` at the current position.
    public func write(_ bytes: [UInt8]) throws { try write(bytes[...]) }

    /// Writes all of `bytes` at `offset` (a `pwrite` loop).
    public func write(_ bytes: ArraySlice<UInt8>, at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let n = try bytes.withUnsafeBytes { src in
                // Safe because: the source range lies within bytes.
                try retrying("pwrite \(name)") { pwrite(rawValue, src.baseAddress! + done, src.count - done, off_t(offset) + off_t(done)) }
            }
            done += n
        }
    }

    /// Writes all of `bytes` at `offset`.
    public func write(_ bytes: [UInt8], at offset: UInt64) throws { try write(bytes[...], at: offset) }

    /// Sets the file's size. The corresponding C function is `ftruncate`.
    public func truncate(to size: UInt64) throws {
        _ = try retrying("ftruncate \(name)") { ftruncate(rawValue, off_t(size)) }
    }

    /// Flushes data and metadata to stable storage. The corresponding C function is `fsync`.
    public func sync() throws {
        _ = try retrying("fsync \(name)") { fsync(rawValue) }
    }

    /// The file's size in bytes (`fstat`).
    public func size() throws -> UInt64 {
        var st = stat()
        _ = try retrying("fstat \(name)") { fstat(rawValue, &st) }
        return UInt64(st.st_size)
    }

    /// Moves the file position (`lseek`).
    @discardableResult
    public func seek(to offset: UInt64) throws -> UInt64 {
        UInt64(try retrying("lseek \(name)") { lseek(rawValue, off_t(offset), SEEK_SET) })
    }
}

/// Calls `body` until it does not fail with `EINTR`; turns `-1` into a `SystemError`.
@discardableResult
func retrying<T: BinaryInteger>(_ what: @autoclosure () -> String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = cferry_errno()
        if code == EINTR { continue }
        throw SystemError.syscall(what(), errno: code)
    }
}

/// Numbers temporary siblings, so concurrent writers of one path in one process never share one.
private let temporarySiblings = Atomic<Int>(0)

/// Replaces the file at `path` with `bytes` atomically: write a temporary sibling, fsync, rename,
/// fsync the directory. A crash leaves either the old file or the new one, never a torn one.
/// Concurrent callers each write their own sibling; the last rename wins.
public func writeFileAtomically(_ bytes: [UInt8], to path: String, permissions: UInt32 = 0o644) throws {
    let temp = path + ".tmp-\(getpid())-\(temporarySiblings.add(1, ordering: .relaxed).newValue)"
    let fd = try FileDescriptor.open(temp, .createTruncate, permissions: permissions)
    do {
        try fd.write(bytes)
        try fd.sync()
        try fd.close()
    } catch {
        try? fd.close()
        unlink(temp)
        throw error
    }
    if rename(temp, path) != 0 {
        let code = cferry_errno()
        unlink(temp)
        throw SystemError.syscall("rename \(temp) to \(path)", errno: code)
    }
    try syncDirectory(containing: path)
}

/// Moves the file `from` to `path`, replacing what is there in one step (`rename(2)`; Foundation's
/// `moveItem` refuses an existing destination).
public func renameReplacing(_ from: String, to path: String) throws {
    if rename(from, path) != 0 {
        throw SystemError.syscall("rename \(from) to \(path)", errno: cferry_errno())
    }
}

/// fsyncs the directory that holds `path`, so a rename into it survives a crash.
public func syncDirectory(containing path: String) throws {
    let slash = path.lastIndex(of: "/")
    let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    let fd = try FileDescriptor.open(directory, .directory)
    defer { try? fd.close() }
    try fd.sync()
}

extension FileDescriptor {
    /// Takes descriptor numbers `numbers` in this process with placeholders (`/dev/null`), so that
    /// nothing the kernel hands this process later (a fanotify event's fd) can get them; a number
    /// already in use is left alone and missing from the result. Close a returned descriptor to
    /// free its number. `open` always returns the lowest free number, so opening until the highest
    /// wanted number is passed takes each free wanted number without ever replacing a descriptor
    /// another thread holds (a `dup2` onto a number checked free could: a check-then-`dup2` once
    /// closed the lowest free number it had just taken, and NIO's eventfd later got it and lost it).
    /// The corresponding C function is `open`.
    public static func occupy(numbers: [Int32]) -> [Int32: FileDescriptor] {
        let wanted = Set(numbers.filter { $0 >= 0 })
        guard let highest = wanted.max() else { return [:] }
        var held: [Int32: FileDescriptor] = [:]
        var fillers: [Int32] = []
        while true {
            let fd = cferry_open("/dev/null", O_RDONLY | O_CLOEXEC, 0)
            guard fd >= 0 else { break }
            if wanted.contains(fd) {
                held[fd] = FileDescriptor(rawValue: fd, name: "placeholder for fd \(fd)")
            } else {
                fillers.append(fd)
            }
            if fd >= highest { break }
        }
        for fd in fillers { _ = CFerry.close(fd) }
        return held
    }
}
