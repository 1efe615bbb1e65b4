/// Why a range could not be filled. The backend turns any of these into EIO for the reader
/// (never into wrong bytes) and logs the description, which names blob and chunk.
public enum FillError: Error, Sendable, CustomStringConvertible {
    case rangeOutOfBounds(blob: String, range: Range<UInt64>, size: UInt64)
    case sourceMissing(source: String, blob: String)
    /// Every source failed for a chunk; `reasons` has one line per source.
    case allSourcesFailed(blob: String, chunk: Int, reasons: [String])
    case shortRead(source: String, blob: String, expected: Int, got: Int)
    case sinkFailed(blob: String, chunk: Int, reason: String)
    case unknownBlob(String)

    public var description: String {
        switch self {
        case let .rangeOutOfBounds(blob, range, size):
            return "blob \(blob): range \(range.lowerBound)..<\(range.upperBound) is outside its \(size)-byte address space"
        case let .sourceMissing(source, blob): return "\(source) does not have blob \(blob)"
        case let .allSourcesFailed(blob, chunk, reasons):
            return "blob \(blob) chunk \(chunk): no source gave verified bytes: " + reasons.joined(separator: "; ")
        case let .shortRead(source, blob, expected, got): return "\(source): blob \(blob): read \(got) bytes, expected \(expected)"
        case let .sinkFailed(blob, chunk, reason): return "blob \(blob) chunk \(chunk): cannot write to the cache: \(reason)"
        case let .unknownBlob(blob): return "unknown blob \(blob)"
        }
    }
}
