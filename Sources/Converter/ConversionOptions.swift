public import Blob
public import OCI

/// What `ferry convert` was asked to do.
public struct ConversionOptions: Sendable {
    /// Chunk size in bytes: a power of two from 4 KiB to 16 MiB.
    public var chunkSize: UInt64 = 1 << 20
    public var compression: ChunkCompression = .lz4
    /// Regular files up to this many bytes are stored inside the bootstrap instead of a blob
    /// (at most 4096 − 64, so an inode and its data fit one EROFS block).
    public var inlineLimit: Int = 0
    public var platform: Platform = .current
    /// Bootstraps of converted images whose chunks may be reused (`--chunk-dict`), each with a
    /// function that locates its blobs on disk.
    public var chunkDictionaries: [ChunkDictionary] = []
    /// Paths to record as the image's prefetch list.
    public var prefetch: [String] = []
    /// Write all-zero chunks as EROFS holes (unmapped, not stored) instead of storing one
    /// deduplicated zero chunk. Off by default: Linux's EROFS over fscache (6.1 … 6.12 at least,
    /// `erofs_fscache_data_read`) zero-fills the *rest of the read request* when it meets an
    /// unmapped chunk, so data after a hole in the same readahead window reads as zeros. Holes
    /// are safe for loop mounts, `ferry export` and the fanotify backend.
    public var zeroChunksAsHoles = false
    /// How many batches of chunks (about 1 MiB each, or one larger chunk) may be hashed and
    /// compressed at once (bounds memory).
    public var pipelineWindow: Int = 16

    public init() {}

    /// log2 of `chunkSize`, after checking it.
    public func chunkSizeLog2() throws -> UInt8 {
        guard chunkSize >= 4096, chunkSize <= 16 << 20, chunkSize & (chunkSize - 1) == 0 else {
            throw BlobError.invalidChunkSize(chunkSize)
        }
        return UInt8(chunkSize.trailingZeroBitCount)
    }
}

/// A converted image used as a chunk dictionary: its chunk tables and where its blob files are.
public struct ChunkDictionary: Sendable {
    public var metadata: BootstrapMetadata
    /// Path of each blob file, in `metadata.blobs` order.
    public var blobPaths: [String]
    /// The descriptor of each blob, for the manifest of images that reuse it.
    public var blobDescriptors: [Descriptor]

    public init(metadata: BootstrapMetadata, blobPaths: [String], blobDescriptors: [Descriptor]) {
        self.metadata = metadata
        self.blobPaths = blobPaths
        self.blobDescriptors = blobDescriptors
    }
}
