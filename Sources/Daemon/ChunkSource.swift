public import Blob
import FerrySystem

/// Somewhere the compressed bytes of a blob can be read from: peers, a registry (mirrors, then
/// the origin), a local OCI layout. Sources are tried in order; none is trusted: every chunk is
/// verified against its digest before it is used.
public protocol ChunkSource: Sendable {
    /// A short name for logs and metrics ("registry", "peer 10.0.0.3", "layout").
    var name: String { get }
    /// Reads `range` of the compressed blob `blob` (a run of whole chunks).
    func read(blob: BlobInfo, range: Range<UInt64>) async throws -> [UInt8]
}

/// Reads blobs from files on local disk (an OCI layout, or a directory of blob files).
public struct FileChunkSource: ChunkSource {
    public let name: String
    private let pathForBlob: @Sendable (BlobInfo) -> String?

    /// - Parameter pathForBlob: where the compressed blob lives, or nil when it is not here.
    public init(name: String = "local files", pathForBlob: @escaping @Sendable (BlobInfo) -> String?) {
        self.name = name
        self.pathForBlob = pathForBlob
    }

    public func read(blob: BlobInfo, range: Range<UInt64>) async throws -> [UInt8] {
        guard let path = pathForBlob(blob) else { throw FillError.sourceMissing(source: name, blob: blob.hexDigest) }
        let fd = try FileDescriptor.open(path, .readOnly)
        defer { try? fd.close() }
        return try fd.read(at: range.lowerBound, count: Int(range.upperBound - range.lowerBound))
    }
}
