import FerrySystem
import Dispatch

/// A chunk after hashing and compression, ready to be appended to a blob.
public struct EncodedChunk: Sendable {
    /// SHA-256 of the uncompressed bytes.
    public var digest: [UInt8]
    /// The bytes to store: compressed, or the original bytes when compression did not shrink them.
    public var stored: [UInt8]
    public var compression: ChunkCompression
    public var uncompressedSize: UInt32
    /// Whether every uncompressed byte is zero (such chunks become EROFS holes with `--holes`).
    public var isAllZero: Bool
}

/// Turns chunk bytes into `EncodedChunk`s and back, verifying digests on the way back.
public enum ChunkCodec {
    /// Hashes and compresses one chunk. All-zero chunks are flagged (they may become EROFS
    /// holes) and still encoded, for images that store them.
    public static func encode(_ bytes: [UInt8], compression: ChunkCompression, zstdLevel: Int32 = 3) throws -> EncodedChunk {
        let digest = SHA256.hash(bytes)
        let size = UInt32(bytes.count)
        let zero = isAllZero(bytes)
        let packed: [UInt8]
        switch compression {
        case .none: packed = bytes
        case .lz4: packed = try LZ4.compress(bytes)
        case .zstd: packed = try Zstd.compress(bytes, level: zstdLevel)
        }
        if compression != .none && packed.count < bytes.count {
            return EncodedChunk(digest: digest, stored: packed, compression: compression, uncompressedSize: size, isAllZero: zero)
        }
        return EncodedChunk(digest: digest, stored: bytes, compression: .none, uncompressedSize: size, isAllZero: zero)
    }

    /// Decompresses a chunk's stored bytes and checks them against its digest.
    /// `blob` and `index` only name the chunk in errors.
    public static func decode(_ stored: ArraySlice<UInt8>, info: ChunkInfo, blob: String, index: Int) throws -> [UInt8] {
        Array(try decodeSharing(stored, info: info, blob: blob, index: index))
    }

    /// Like `decode`, but a chunk stored uncompressed comes back as `stored` itself (sharing its
    /// buffer, no copy): for the daemon, which writes each chunk once and lets it go.
    public static func decodeSharing(_ stored: ArraySlice<UInt8>, info: ChunkInfo, blob: String, index: Int) throws -> ArraySlice<UInt8> {
        guard stored.count == Int(info.compressedSize) else {
            throw BlobError.chunkOutOfBounds(blob: blob, chunk: index, reason: "got \(stored.count) stored bytes, expected \(info.compressedSize)")
        }
        let bytes: ArraySlice<UInt8>
        do {
            switch info.compression {
            case .none: bytes = stored
            case .lz4: bytes = try LZ4.decompress(stored, originalSize: Int(info.uncompressedSize))[...]
            case .zstd: bytes = try Zstd.decompress(stored, originalSize: Int(info.uncompressedSize))[...]
            }
        } catch {
            throw BlobError.corruptChunk(blob: blob, chunk: index, reason: "\(error)")
        }
        guard bytes.count == Int(info.uncompressedSize) else {
            throw BlobError.corruptChunk(blob: blob, chunk: index, reason: "decompressed to \(bytes.count) bytes, expected \(info.uncompressedSize)")
        }
        let actual = SHA256.hash(bytes)
        guard actual == info.digest else {
            throw BlobError.chunkDigestMismatch(blob: blob, chunk: index, expected: hexString(info.digest), actual: hexString(actual))
        }
        return bytes
    }

    /// Whether all bytes are zero, checked eight bytes at a time.
    public static func isAllZero(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            let words = raw.count / 8
            var acc: UInt64 = 0
            for i in 0..<words { acc |= raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) }
            for i in (words * 8)..<raw.count { acc |= UInt64(raw[i]) }
            return acc == 0
        }
    }
}

/// Appends encoded chunks to one blob file and records the blob's chunk table.
///
/// Compressed bytes go back to back; the uncompressed address space advances by each chunk's
/// size rounded up to 4 KiB. The blob digest is computed as bytes are written. Hashing and
/// writing happen on a queue of their own, 4 MiB at a time, at most four buffers behind: the
/// converter's reading thread only copies bytes into the current buffer.
public final class BlobWriter {
    public let path: String
    private let output: Output
    private var chunks: [ChunkInfo] = []
    private var compressedSize: UInt64 = 0
    private var uncompressedSize: UInt64 = 0
    private var pending: [UInt8] = []
    private static let flushSize = 4 << 20

    /// The file and the blob hash, touched only on `queue` once created.
    private final class Output: @unchecked Sendable {
        // Safe because: after init, file, hasher and failure are used only by blocks on `queue`
        // (serial), and read by the owner only after `queue.sync`.
        let file: FileDescriptor
        let hasher = SHA256()
        var failure: (any Error)?
        let queue = DispatchQueue(label: "ferry.blob-writer")
        let slots = DispatchSemaphore(value: 4)
        init(file: FileDescriptor) { self.file = file }
    }

    /// Creates (truncates) the blob file at `path`.
    public init(path: String) throws {
        self.path = path
        output = Output(file: try FileDescriptor.open(path, .createTruncate))
        pending.reserveCapacity(Self.flushSize)
    }

    /// Appends a chunk; returns its index in this blob and its record.
    public func append(_ chunk: EncodedChunk) throws -> (index: Int, info: ChunkInfo) {
        let info = ChunkInfo(uncompressedOffset: uncompressedSize, uncompressedSize: chunk.uncompressedSize,
                             compressedOffset: compressedSize, compressedSize: UInt32(chunk.stored.count),
                             compression: chunk.compression, digest: chunk.digest)
        pending.append(contentsOf: chunk.stored)
        if pending.count >= Self.flushSize { try flushPending() }
        compressedSize += UInt64(chunk.stored.count)
        uncompressedSize += info.alignedSize
        chunks.append(info)
        return (chunks.count - 1, info)
    }

    /// Whether any chunk has been written.
    public var isEmpty: Bool { chunks.isEmpty }

    /// Flushes, closes the file, and returns the blob's table and digest.
    public func finish() throws -> BlobInfo {
        try flushPending()
        let output = self.output
        let digest: [UInt8] = try output.queue.sync {
            if let failure = output.failure { throw failure }
            try output.file.close()
            return output.hasher.finalize()
        }
        return BlobInfo(digest: digest, compressedSize: compressedSize, uncompressedSize: uncompressedSize, chunks: chunks)
    }

    /// Closes the file without producing a blob (on failure paths).
    public func abandon() {
        let output = self.output
        output.queue.sync { try? output.file.close() }
    }

    /// Hands the buffer to the writing queue (waiting while four are already queued) and reports
    /// an earlier write failure, if any.
    private func flushPending() throws {
        guard !pending.isEmpty else { return }
        let output = self.output
        if let failure = output.queue.sync(execute: { output.failure }) { throw failure }
        output.slots.wait()
        let buffer = pending
        output.queue.async {
            defer { output.slots.signal() }
            guard output.failure == nil else { return }
            output.hasher.update(buffer)
            do { try output.file.write(buffer) } catch { output.failure = error }
        }
        pending = []
        pending.reserveCapacity(Self.flushSize)
    }
}
