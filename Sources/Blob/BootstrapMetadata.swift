import FerrySystem

/// The Ferry section appended to a bootstrap after its EROFS blocks: the chunk tables of every
/// blob the image uses (in EROFS device order) and an optional prefetch list. The kernel never
/// reads past the EROFS blocks (`sb.blocks`), so the section is invisible to it.
///
/// Layout (all integers little-endian):
/// ```
/// section header, 32 bytes: magic "FERRYMD1" | version u32 | chunk-size log2 u8 |
///                           default compression u8 | reserved u16 | blob count u32 |
///                           prefetch count u32 | reserved 8 bytes
/// per blob, 56 bytes:       sha256 32 | compressed size u64 | uncompressed size u64 |
///                           chunk count u32 | reserved u32
///   per chunk, 40 bytes:    sha256 of uncompressed bytes 32 | compressed size u32 |
///                           (uncompressed size - 1) u24 + compression u8 as one u32
/// per prefetch path:        length u16 | bytes
/// footer, 64 bytes (last bytes of the file):
///                           magic "FERRYFT1" | section offset u64 | section length u64 |
///                           sha256 of the section 32 | version u32 | reserved u32
/// ```
/// Chunk offsets are not stored: chunks are laid out back to back in both the compressed blob
/// and the 4 KiB-aligned uncompressed address space, so the reader derives them.
public struct BootstrapMetadata: Sendable, Hashable {
    public static let version: UInt32 = 1
    static let sectionMagic = Array("FERRYMD1".utf8)
    static let footerMagic = Array("FERRYFT1".utf8)
    public static let footerSize = 64
    static let maximumChunkSize: UInt32 = 16 << 20

    /// log2 of the chunk size used when converting (12 ... 24).
    public var chunkSizeLog2: UInt8
    /// The compressor asked for when converting (single chunks may be stored raw).
    public var compression: ChunkCompression
    /// Blobs in EROFS device order: `blobs[0]` is device 1.
    public var blobs: [BlobInfo]
    /// Paths (raw bytes, relative to the root, "/"-separated) to prefetch after mounting.
    public var prefetch: [[UInt8]]

    public init(chunkSizeLog2: UInt8, compression: ChunkCompression, blobs: [BlobInfo], prefetch: [[UInt8]] = []) {
        self.chunkSizeLog2 = chunkSizeLog2
        self.compression = compression
        self.blobs = blobs
        self.prefetch = prefetch
    }

    /// Encodes the section followed by its footer, for a section that starts at `offset` in the file.
    public func encode(at offset: UInt64) -> [UInt8] {
        var w = LittleEndianWriter(capacity: 32 + blobs.reduce(0) { $0 + 56 + 40 * $1.chunks.count })
        w.raw(Self.sectionMagic)
        w.u32(Self.version)
        w.u8(chunkSizeLog2)
        w.u8(compression.rawValue)
        w.u16(0)
        w.u32(UInt32(blobs.count))
        w.u32(UInt32(prefetch.count))
        w.zeros(8)
        for blob in blobs {
            w.raw(blob.digest)
            w.u64(blob.compressedSize)
            w.u64(blob.uncompressedSize)
            w.u32(UInt32(blob.chunks.count))
            w.u32(0)
            for chunk in blob.chunks {
                w.raw(chunk.digest)
                w.u32(chunk.compressedSize)
                w.u32((chunk.uncompressedSize - 1) | UInt32(chunk.compression.rawValue) << 24)
            }
        }
        for path in prefetch {
            w.u16(UInt16(path.count))
            w.raw(path)
        }
        let section = w.bytes
        var footer = LittleEndianWriter(capacity: Self.footerSize)
        footer.raw(Self.footerMagic)
        footer.u64(offset)
        footer.u64(UInt64(section.count))
        footer.raw(SHA256.hash(section))
        footer.u32(Self.version)
        footer.u32(0)
        return section + footer.bytes
    }

    /// Where the section is, as the footer (the last 64 bytes of a bootstrap) says.
    public struct Footer: Sendable, Hashable {
        public var sectionOffset: UInt64
        public var sectionLength: UInt64
        public var sectionDigest: [UInt8]

        public init(sectionOffset: UInt64, sectionLength: UInt64, sectionDigest: [UInt8]) {
            self.sectionOffset = sectionOffset
            self.sectionLength = sectionLength
            self.sectionDigest = sectionDigest
        }
    }

    /// Decodes a footer; `what` names the file in errors.
    public static func decodeFooter(_ bytes: [UInt8], what: String) throws -> Footer {
        var r = LittleEndianReader(bytes)
        do {
            guard bytes.count == footerSize, try r.raw(8) == footerMagic else {
                throw BlobError.malformedMetadata(what: what, reason: "no Ferry footer at the end (not a Ferry bootstrap?)")
            }
            let offset = try r.u64(), length = try r.u64(), digest = try r.raw(32), version = try r.u32()
            guard version == Self.version else {
                throw BlobError.malformedMetadata(what: what, reason: "unsupported version \(version)")
            }
            return Footer(sectionOffset: offset, sectionLength: length, sectionDigest: digest)
        } catch is LittleEndianReader.OutOfBounds {
            throw BlobError.malformedMetadata(what: what, reason: "footer truncated")
        }
    }

    /// Decodes and verifies a section against its footer.
    public static func decode(section: [UInt8], footer: Footer, what: String) throws -> BootstrapMetadata {
        guard UInt64(section.count) == footer.sectionLength else {
            throw BlobError.malformedMetadata(what: what, reason: "section is \(section.count) bytes, footer says \(footer.sectionLength)")
        }
        guard SHA256.hash(section) == footer.sectionDigest else {
            throw BlobError.malformedMetadata(what: what, reason: "section checksum does not match (corrupt bootstrap)")
        }
        var r = LittleEndianReader(section)
        do {
            guard try r.raw(8) == sectionMagic else { throw BlobError.malformedMetadata(what: what, reason: "bad section magic") }
            let version = try r.u32()
            guard version == Self.version else { throw BlobError.malformedMetadata(what: what, reason: "unsupported version \(version)") }
            let log2 = try r.u8()
            guard (12...24).contains(log2) else { throw BlobError.malformedMetadata(what: what, reason: "chunk size 2^\(log2) out of range") }
            guard let compression = ChunkCompression(rawValue: try r.u8()) else {
                throw BlobError.malformedMetadata(what: what, reason: "unknown compression")
            }
            _ = try r.u16()
            let blobCount = Int(try r.u32()), prefetchCount = Int(try r.u32())
            _ = try r.take(8)
            var blobs: [BlobInfo] = []
            blobs.reserveCapacity(min(blobCount, 65_535))
            for b in 0..<blobCount {
                let digest = try r.raw(32)
                let compressedSize = try r.u64(), uncompressedSize = try r.u64()
                guard compressedSize <= maximumBlobSize, uncompressedSize <= maximumBlobSize else {
                    throw BlobError.malformedMetadata(what: what, reason: "blob \(b) claims \(max(compressedSize, uncompressedSize)) bytes, more than \(maximumBlobSize)")
                }
                let chunkCount = Int(try r.u32())
                _ = try r.u32()
                guard chunkCount <= (section.count - r.offset) / 40 else {
                    throw BlobError.malformedMetadata(what: what, reason: "blob \(b) claims \(chunkCount) chunks, more than fit")
                }
                var chunks: [ChunkInfo] = []
                chunks.reserveCapacity(chunkCount)
                var uncompressedOffset: UInt64 = 0, compressedOffset: UInt64 = 0
                for c in 0..<chunkCount {
                    let chunkDigest = try r.raw(32)
                    let compressedSize = try r.u32(), packed = try r.u32()
                    guard let kind = ChunkCompression(rawValue: UInt8(packed >> 24)) else {
                        throw BlobError.malformedMetadata(what: what, reason: "blob \(b) chunk \(c): unknown compression")
                    }
                    let size = (packed & 0x00ff_ffff) + 1
                    guard size <= UInt32(1) << log2 else {
                        throw BlobError.malformedMetadata(what: what, reason: "blob \(b) chunk \(c): \(size) bytes, more than the chunk size 2^\(log2)")
                    }
                    guard compressedSize <= maximumCompressedSize(uncompressedSize: size) else {
                        throw BlobError.malformedMetadata(what: what, reason: "blob \(b) chunk \(c): \(compressedSize) compressed bytes for \(size), more than any codec makes")
                    }
                    let chunk = ChunkInfo(uncompressedOffset: uncompressedOffset, uncompressedSize: size,
                                          compressedOffset: compressedOffset, compressedSize: compressedSize,
                                          compression: kind, digest: chunkDigest)
                    uncompressedOffset += chunk.alignedSize
                    compressedOffset += UInt64(compressedSize)
                    chunks.append(chunk)
                }
                guard uncompressedOffset <= uncompressedSize, compressedOffset <= compressedSize else {
                    throw BlobError.malformedMetadata(what: what, reason: "blob \(b): chunks exceed the blob's sizes")
                }
                blobs.append(BlobInfo(digest: digest, compressedSize: compressedSize, uncompressedSize: uncompressedSize, chunks: chunks))
            }
            var prefetch: [[UInt8]] = []
            for _ in 0..<prefetchCount { prefetch.append(try r.raw(Int(try r.u16()))) }
            return BootstrapMetadata(chunkSizeLog2: log2, compression: compression, blobs: blobs, prefetch: prefetch)
        } catch is LittleEndianReader.OutOfBounds {
            throw BlobError.malformedMetadata(what: what, reason: "section truncated")
        }
    }

    /// Reads the section of a bootstrap file; also returns where the section starts (the size of
    /// the EROFS part).
    public static func read(bootstrapAt path: String) throws -> (metadata: BootstrapMetadata, sectionOffset: UInt64) {
        let fd = try FileDescriptor.open(path, .readOnly)
        defer { try? fd.close() }
        let size = try fd.size()
        guard size >= UInt64(footerSize) else { throw BlobError.malformedMetadata(what: path, reason: "file too small") }
        let footer = try decodeFooter(try fd.read(at: size - UInt64(footerSize), count: footerSize), what: path)
        guard footer.sectionOffset <= size - UInt64(footerSize), footer.sectionLength == size - UInt64(footerSize) - footer.sectionOffset else {
            throw BlobError.malformedMetadata(what: path, reason: "footer points outside the file")
        }
        let section = try fd.read(at: footer.sectionOffset, count: Int(footer.sectionLength))
        return (try decode(section: section, footer: footer, what: path), footer.sectionOffset)
    }
}
