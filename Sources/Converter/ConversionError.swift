/// Why a conversion, export or check failed. Errors of the modules below (OCI, EROFS, Blob,
/// FerrySystem) are passed through as they are: they already name the layer, entry or chunk.
public enum ConversionError: Error, Sendable, CustomStringConvertible {
    case invalidOption(String)
    case limitExceeded(String)
    case targetExists(String)
    case notAFerryImage(String)
    case unsupportedTransport(String)
    case checkFailed([String])
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidOption(message): return message
        case let .limitExceeded(message): return "image too large for the format: \(message)"
        case let .targetExists(path): return "\(path) already exists; remove it or choose another target"
        case let .notAFerryImage(what): return "\(what) is not a Ferry image (no layer annotated as bootstrap)"
        case let .unsupportedTransport(what): return what
        case let .checkFailed(problems):
            return "check failed with \(problems.count) problem(s):\n" + problems.prefix(20).map { "  - \($0)" }.joined(separator: "\n")
        case let .io(path, reason): return "\(path): \(reason)"
        }
    }
}
