/// Errors of chunking, blob files and the chunk-table section of a bootstrap.
public enum BlobError: Error, Sendable, CustomStringConvertible {
    case invalidChunkSize(UInt64)
    case malformedMetadata(what: String, reason: String)
    case chunkDigestMismatch(blob: String, chunk: Int, expected: String, actual: String)
    case chunkOutOfBounds(blob: String, chunk: Int, reason: String)
    case corruptChunk(blob: String, chunk: Int, reason: String)
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidChunkSize(size):
            return "invalid chunk size \(size): it must be a power of two from 4 KiB to 16 MiB"
        case let .malformedMetadata(what, reason): return "\(what): malformed Ferry chunk table: \(reason)"
        case let .chunkDigestMismatch(blob, chunk, expected, actual):
            return "blob \(blob) chunk \(chunk): digest mismatch: expected sha256:\(expected), got sha256:\(actual)"
        case let .chunkOutOfBounds(blob, chunk, reason): return "blob \(blob) chunk \(chunk): \(reason)"
        case let .corruptChunk(blob, chunk, reason): return "blob \(blob) chunk \(chunk): cannot decompress: \(reason)"
        case let .io(path, reason): return "\(path): \(reason)"
        }
    }
}
