import Daemon
public import Blob

/// The body of a peer's answer to `GET /chunks/<hex>`: one chunk as its serving node stores it.
///
/// Layout (the chunk store's record layout, so a stored chunk is served without re-encoding):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 2 | magic "FC" (0x46 0x43) |
/// | 2 | 1 | compression (`ChunkCompression` raw value) |
/// | 3 | 1 | reserved, 0 |
/// | 4 | 4 | uncompressed size, u32 little-endian |
/// | 8 | … | the chunk's stored (compressed) bytes |
///
/// Nothing in it is trusted: the receiver decodes it with its own chunk table's digest.
public struct PeerChunkRecord: Sendable, Equatable {
    static let headerSize = 8
    static let magic: [UInt8] = [0x46, 0x43]

    public var compression: ChunkCompression
    public var uncompressedSize: UInt32
    public var stored: [UInt8]

    public init(compression: ChunkCompression, uncompressedSize: UInt32, stored: [UInt8]) {
        self.compression = compression
        self.uncompressedSize = uncompressedSize
        self.stored = stored
    }

    /// Parses a body; nil when it is too short, has the wrong magic or an unknown compression.
    public init?(decoding body: [UInt8]) {
        guard body.count >= Self.headerSize, body[0] == Self.magic[0], body[1] == Self.magic[1],
              let kind = ChunkCompression(rawValue: body[2]) else { return nil }
        compression = kind
        uncompressedSize = UInt32(body[4]) | UInt32(body[5]) << 8 | UInt32(body[6]) << 16 | UInt32(body[7]) << 24
        stored = Array(body[Self.headerSize...])
    }

    /// The record's bytes.
    public func encoded() -> [UInt8] {
        var out = Self.magic + [compression.rawValue, 0]
        out.reserveCapacity(Self.headerSize + stored.count)
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: uncompressedSize >> (8 * UInt32(i)))) }
        return out + stored
    }

    /// Whether the record has the encoding `info` expects (same compression, same stored size);
    /// a node may hold a chunk of the same content compressed differently (another image).
    func matches(_ info: ChunkInfo) -> Bool {
        compression == info.compression && uncompressedSize == info.uncompressedSize && stored.count == Int(info.compressedSize)
    }

    /// Decodes and checks the record against `digest`; throws `BlobError` on any mismatch.
    func verify(digest: [UInt8], name: String) throws {
        let info = ChunkInfo(uncompressedOffset: 0, uncompressedSize: uncompressedSize, compressedOffset: 0,
                             compressedSize: UInt32(stored.count), compression: compression, digest: digest)
        _ = try ChunkCodec.decode(stored[...], info: info, blob: name, index: 0)
    }
}
