import Blob
import EROFS

/// One chunk of one of an image's blobs: indexes into `BootstrapMetadata.blobs` and its chunk table.
public struct BlobChunk: Hashable, Sendable {
    public var blob: Int
    public var chunk: Int
    public init(blob: Int, chunk: Int) {
        self.blob = blob
        self.chunk = chunk
    }
}

/// Which blob chunks the files of an image's bootstrap name in their chunk-index tables (what
/// prefetch plans and access traces resolve paths with).
enum FileChunks {
    /// The blob chunks of a regular file, in file order (holes and inline data name none; a chunk
    /// named twice appears twice).
    static func of(_ inode: Inode, in reader: ImageReader, metadata: BootstrapMetadata) throws -> [BlobChunk] {
        guard inode.type == .regular else { return [] }
        var out: [BlobChunk] = []
        for reference in try reader.chunks(of: inode) {
            guard case let .stored(device, block) = reference, device >= 1, Int(device) <= metadata.blobs.count else { continue }
            let blobIndex = Int(device) - 1
            let offset = UInt64(block) * blobBlockSize
            for index in metadata.blobs[blobIndex].chunkIndexes(overlapping: offset ..< offset + 1) {
                out.append(BlobChunk(blob: blobIndex, chunk: index))
            }
        }
        return out
    }

    /// A file that names at least one chunk of interest.
    struct NamingFile {
        var path: String
        /// Every chunk of the file, in file order.
        var chunks: [BlobChunk]
    }

    /// The files (every path of a hard-linked one) whose tables name any chunk of `wanted`, in walk order.
    static func files(naming wanted: Set<BlobChunk>, bootstrap: String, metadata: BootstrapMetadata) throws -> [NamingFile] {
        guard !wanted.isEmpty else { return [] }
        let reader = try ImageReader(path: bootstrap)
        var out: [NamingFile] = []
        try reader.walk { path, inode in
            let chunks = try of(inode, in: reader, metadata: metadata)
            if chunks.contains(where: wanted.contains) {
                out.append(NamingFile(path: String(decoding: path, as: UTF8.self), chunks: chunks))
            }
        }
        return out
    }
}
