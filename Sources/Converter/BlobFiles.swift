public import Blob
public import FerrySystem

/// Reading chunks out of local blob files: verification for `ferry check` and the uncompressed
/// address spaces for `ferry materialize` / `ferry export`.
public enum BlobFiles {
    /// Decompresses and verifies every chunk of `blob` read from the file at `path`.
    /// Returns the problems found (empty when the blob is intact).
    public static func verify(_ blob: BlobInfo, at path: String) throws -> [String] {
        let fd = try FileDescriptor.open(path, .readOnly)
        defer { try? fd.close() }
        var problems: [String] = []
        let size = try fd.size()
        if size != blob.compressedSize {
            problems.append("blob sha256:\(blob.hexDigest): file is \(size) bytes, the chunk table says \(blob.compressedSize)")
        }
        let hasher = SHA256()
        var offset: UInt64 = 0
        // Whole-blob digest, in 4 MiB reads.
        while offset < size {
            let piece = try fd.read(at: offset, count: Int(min(4 << 20, size - offset)))
            if piece.isEmpty { break }
            hasher.update(piece)
            offset += UInt64(piece.count)
        }
        let actual = hasher.finalize()
        if actual != blob.digest {
            problems.append("blob sha256:\(blob.hexDigest): content digest is sha256:\(hexString(actual))")
        }
        for (i, chunk) in blob.chunks.enumerated() {
            do {
                _ = try readChunk(chunk, index: i, of: blob, from: fd)
            } catch {
                problems.append("\(error)")
            }
        }
        return problems
    }

    /// Reads, decompresses and verifies one chunk from an open blob file.
    public static func readChunk(_ chunk: ChunkInfo, index: Int, of blob: BlobInfo, from fd: FileDescriptor) throws -> [UInt8] {
        let stored = try fd.read(at: chunk.compressedOffset, count: Int(chunk.compressedSize))
        return try ChunkCodec.decode(stored[...], info: chunk, blob: "sha256:\(blob.hexDigest)", index: index)
    }

    /// Writes the blob's uncompressed address space into `output` starting at byte `base`
    /// (sparse: padding and unwritten space stay holes). Every chunk is verified first.
    public static func writeAddressSpace(_ blob: BlobInfo, blobPath: String, into output: FileDescriptor, base: UInt64) throws {
        let fd = try FileDescriptor.open(blobPath, .readOnly)
        defer { try? fd.close() }
        for (i, chunk) in blob.chunks.enumerated() {
            let bytes = try readChunk(chunk, index: i, of: blob, from: fd)
            try output.write(bytes, at: base + chunk.uncompressedOffset)
        }
    }

    /// Writes the blob's uncompressed address space as its own file of exactly
    /// `blob.uncompressedSize` bytes (what `mount -o device=` needs).
    public static func materialize(_ blob: BlobInfo, blobPath: String, to path: String) throws {
        let out = try FileDescriptor.open(path, .createTruncate)
        do {
            try out.truncate(to: blob.uncompressedSize)
            try writeAddressSpace(blob, blobPath: blobPath, into: out, base: 0)
            try out.close()
        } catch {
            try? out.close()
            throw error
        }
    }
}
