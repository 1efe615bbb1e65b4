import FerrySystem

/// How a chunk's bytes are stored in its blob.
public enum ChunkCompression: UInt8, Sendable, Hashable, CustomStringConvertible {
    /// Stored as they are (also used when compression would not shrink the chunk).
    case none = 0
    /// One LZ4 block (`LZ4_compress_default`).
    case lz4 = 1
    /// One zstd frame.
    case zstd = 2

    public var description: String {
        switch self {
        case .none: return "none"
        case .lz4: return "lz4"
        case .zstd: return "zstd"
        }
    }

    /// Parses "none", "lz4" or "zstd".
    public init?(name: String) {
        switch name {
        case "none": self = .none
        case "lz4": self = .lz4
        case "zstd": self = .zstd
        default: return nil
        }
    }
}

/// The largest blob (compressed or uncompressed) a chunk table may describe: 2^48 bytes (256 TiB).
/// Larger claims are refused when the table is read, so sizes never overflow offsets or the
/// kernel's signed 64-bit file sizes.
public let maximumBlobSize: UInt64 = 1 << 48

/// The most bytes a chunk of `uncompressedSize` bytes may take compressed: LZ4's and zstd's
/// worst-case bounds are below `n + n/128 + 1 KiB` (`LZ4_COMPRESSBOUND`, `ZSTD_COMPRESSBOUND`);
/// a table claiming more is refused rather than trusted with a multi-GiB allocation.
public func maximumCompressedSize(uncompressedSize n: UInt32) -> UInt32 { n + n / 128 + 1024 }

/// The block size of a blob's uncompressed address space: every chunk starts on a 4 KiB boundary
/// there, because EROFS chunk indexes address devices in blocks.
public let blobBlockSize: UInt64 = 4096

/// One chunk of a blob: where its compressed bytes are, where it sits in the blob's uncompressed
/// address space, and the SHA-256 of its uncompressed bytes.
public struct ChunkInfo: Sendable, Hashable {
    /// Byte offset in the blob's uncompressed address space (a multiple of 4 KiB).
    public var uncompressedOffset: UInt64
    /// Bytes of uncompressed data (1 ... 16 MiB). The address space reserves this rounded up to 4 KiB.
    public var uncompressedSize: UInt32
    /// Byte offset of the compressed bytes in the blob.
    public var compressedOffset: UInt64
    /// Bytes of compressed data in the blob.
    public var compressedSize: UInt32
    public var compression: ChunkCompression
    /// SHA-256 of the uncompressed bytes (32 bytes).
    public var digest: [UInt8]

    public init(uncompressedOffset: UInt64, uncompressedSize: UInt32, compressedOffset: UInt64,
                compressedSize: UInt32, compression: ChunkCompression, digest: [UInt8]) {
        self.uncompressedOffset = uncompressedOffset
        self.uncompressedSize = uncompressedSize
        self.compressedOffset = compressedOffset
        self.compressedSize = compressedSize
        self.compression = compression
        self.digest = digest
    }

    /// Bytes the chunk occupies in the address space (its size rounded up to 4 KiB).
    public var alignedSize: UInt64 { (UInt64(uncompressedSize) + blobBlockSize - 1) / blobBlockSize * blobBlockSize }

    /// The compressed bytes' range in the blob.
    public var compressedRange: Range<UInt64> { compressedOffset ..< compressedOffset + UInt64(compressedSize) }

    /// The chunk's range in the uncompressed address space (not rounded).
    public var uncompressedRange: Range<UInt64> { uncompressedOffset ..< uncompressedOffset + UInt64(uncompressedSize) }
}

/// Everything the daemon needs about one data blob to serve any uncompressed range of it
/// without touching the network: its id and the table of its chunks, in address order.
public struct BlobInfo: Sendable, Hashable {
    /// SHA-256 of the whole compressed blob; also its OCI layer digest and its EROFS device tag.
    public var digest: [UInt8]
    /// Size of the compressed blob in bytes.
    public var compressedSize: UInt64
    /// Size of the uncompressed address space in bytes (a multiple of 4 KiB).
    public var uncompressedSize: UInt64
    /// Chunks sorted by `uncompressedOffset`; compressed bytes are in the same order, back to back.
    public var chunks: [ChunkInfo]

    public init(digest: [UInt8], compressedSize: UInt64, uncompressedSize: UInt64, chunks: [ChunkInfo]) {
        self.digest = digest
        self.compressedSize = compressedSize
        self.uncompressedSize = uncompressedSize
        self.chunks = chunks
    }

    /// Lower-case hex of `digest`: the device tag and the hex part of the OCI digest.
    public var hexDigest: String { hexString(digest) }

    /// SHA-256 of this blob's chunk table (its digest, sizes and every chunk's sizes, compression
    /// and digest, little-endian as in the bootstrap's section). Two images that name the same
    /// blob digest share cached state only when this matches too: a blob digest alone is a
    /// claim the chunk table makes, and an image could otherwise put its own bytes under a
    /// popular blob's name for every later image.
    public var chunkTableDigest: [UInt8] {
        var w = LittleEndianWriter(capacity: 56 + 40 * chunks.count)
        w.raw(digest)
        w.u64(compressedSize)
        w.u64(uncompressedSize)
        w.u32(UInt32(truncatingIfNeeded: chunks.count))
        for chunk in chunks {
            w.raw(chunk.digest)
            w.u64(chunk.uncompressedOffset)
            w.u64(chunk.compressedOffset)
            w.u32(chunk.compressedSize)
            w.u32(chunk.uncompressedSize)
            w.u8(chunk.compression.rawValue)
        }
        return SHA256.hash(w.bytes)
    }

    /// The name of this blob's cached state (a fanotify cache file, a fscache object record):
    /// the blob digest and the first 128 bits of `chunkTableDigest`, in hex.
    public var cacheKey: String { hexDigest + "-" + hexString(chunkTableDigest).prefix(32) }

    /// Indexes of the chunks that overlap `range` of the uncompressed address space
    /// (padding between chunks belongs to the chunk before it).
    public func chunkIndexes(overlapping range: Range<UInt64>) -> Range<Int> {
        guard !range.isEmpty, !chunks.isEmpty else { return 0..<0 }
        // First chunk whose aligned end is past range.lowerBound.
        var lo = 0, hi = chunks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if chunks[mid].uncompressedOffset + chunks[mid].alignedSize <= range.lowerBound { lo = mid + 1 } else { hi = mid }
        }
        var end = lo
        while end < chunks.count && chunks[end].uncompressedOffset < range.upperBound { end += 1 }
        return lo..<end
    }
}
