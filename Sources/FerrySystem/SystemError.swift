internal import CFerry

/// An error from one of the C libraries or system calls that `FerrySystem` wraps.
///
/// Each case names the operation and carries the library's own code or message, so that the
/// caller can add what it was working on (the layer, the chunk, the file) and show one clear line.
public enum SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A system call failed; `errno` is the kernel's code.
    case syscall(_ name: String, errno: Int32)
    /// LZ4 refused to compress or found the input malformed.
    case lz4(_ operation: String)
    /// zstd returned an error code; `message` is `ZSTD_getErrorName`.
    case zstd(_ operation: String, message: String)
    /// zlib returned an error; `message` is zlib's `msg` or the return code.
    case zlib(_ operation: String, message: String)
    /// OpenSSL's EVP digest API failed.
    case crypto(_ operation: String)
    /// Decompressed data did not have the size the caller said it must have.
    case sizeMismatch(expected: Int, actual: Int)
    /// A message from a kernel interface (fanotify event, cachefiles request) failed a length or
    /// format check; `what` names the structure.
    case malformedKernelMessage(_ what: String, reason: String)
    /// An argument cannot be passed to the kernel as given (e.g. a comma inside a mount option).
    case invalidArgument(_ what: String, reason: String)

    public var description: String {
        switch self {
        case let .syscall(name, errno): return "\(name): \(Errno.describe(errno))"
        case let .lz4(op): return "lz4 \(op) failed (input is malformed or the output does not fit)"
        case let .zstd(op, message): return "zstd \(op) failed: \(message)"
        case let .zlib(op, message): return "gzip \(op) failed: \(message)"
        case let .crypto(op): return "OpenSSL \(op) failed"
        case let .sizeMismatch(expected, actual): return "decompressed \(actual) bytes where \(expected) were expected"
        case let .malformedKernelMessage(what, reason): return "malformed \(what) from the kernel: \(reason)"
        case let .invalidArgument(what, reason): return "invalid \(what): \(reason)"
        }
    }
}

/// Helpers around `errno`.
public enum Errno {
    /// The current thread's `errno`.
    public static var current: Int32 { cferry_errno() }

    /// `strerror` text plus the symbolic value, e.g. "No such file or directory (errno 2)".
    public static func describe(_ code: Int32) -> String {
        guard let cString = strerror(code) else { return "errno \(code)" }
        return "\(String(cString: cString)) (errno \(code))"
    }
}
