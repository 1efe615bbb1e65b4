public import Blob
import FerrySystem
import Foundation

/// The local persistent chunk store: content-addressed by the SHA-256 of a chunk's
/// uncompressed bytes, shared by every image, surviving restarts.
///
/// Each chunk is one file `chunks/<first 2 hex>/<remaining 62 hex>` holding an 8-byte header
/// (magic "FC", compression u8, reserved u8, uncompressed size u32 little-endian) and the
/// chunk's stored (compressed) bytes as they came from the blob. Files are written to a
/// temporary name and renamed, so a crash never leaves a torn chunk under its final name;
/// every read is verified against the digest anyway.
public final class ChunkStore: Sendable {
    public let directory: String

    /// Opens (creating if needed) a store rooted at `directory`.
    public init(directory: String) throws {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory + "/chunks", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: directory + "/tmp", withIntermediateDirectories: true)
        } catch {
            throw FillError.sinkFailed(blob: "-", chunk: -1, reason: "cannot create chunk store \(directory): \(error.localizedDescription)")
        }
    }

    private func path(for digest: [UInt8]) -> String {
        let hex = hexString(digest)
        return "\(directory)/chunks/\(hex.prefix(2))/\(hex.dropFirst(2))"
    }

    /// Whether the store has the chunk (without verifying it).
    public func contains(_ digest: [UInt8]) -> Bool {
        FileManager.default.fileExists(atPath: path(for: digest))
    }

    /// Returns the chunk's verified uncompressed bytes, or nil when absent or damaged
    /// (a damaged file is removed so it is fetched again).
    public func load(_ chunk: ChunkInfo) -> [UInt8]? {
        let file = path(for: chunk.digest)
        guard let fd = try? FileDescriptor.open(file, .readOnly) else { return nil }
        defer { try? fd.close() }
        guard let size = try? fd.size(), size >= 8, let bytes = try? fd.read(at: 0, count: Int(size)), bytes.count == Int(size),
              bytes[0] == 0x46, bytes[1] == 0x43, let kind = ChunkCompression(rawValue: bytes[2]) else {
            try? FileManager.default.removeItem(atPath: file)
            return nil
        }
        let uncompressed = UInt32(bytes[4]) | UInt32(bytes[5]) << 8 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 24
        var info = chunk
        info.compression = kind
        info.compressedSize = UInt32(bytes.count - 8)
        info.uncompressedSize = uncompressed
        guard uncompressed == chunk.uncompressedSize,
              let data = try? ChunkCodec.decode(bytes[8...], info: info, blob: "store", index: 0) else {
            try? FileManager.default.removeItem(atPath: file)
            return nil
        }
        return data
    }

    /// The chunk's record as stored (compression, uncompressed size, stored bytes), unverified;
    /// nil when absent or not a record. The peer server verifies it before serving it.
    public func loadStored(_ digest: [UInt8]) -> (compression: ChunkCompression, uncompressedSize: UInt32, stored: [UInt8])? {
        guard let fd = try? FileDescriptor.open(path(for: digest), .readOnly) else { return nil }
        defer { try? fd.close() }
        guard let size = try? fd.size(), size >= 8, let bytes = try? fd.read(at: 0, count: Int(size)), bytes.count == Int(size),
              bytes[0] == 0x46, bytes[1] == 0x43, let kind = ChunkCompression(rawValue: bytes[2]) else { return nil }
        let uncompressed = UInt32(bytes[4]) | UInt32(bytes[5]) << 8 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 24
        return (kind, uncompressed, Array(bytes[8...]))
    }

    /// Stores a chunk's stored bytes (already verified by the caller). Failures (e.g. disk full)
    /// are returned, not thrown: the store is a cache, serving goes on without it.
    @discardableResult
    public func save(_ chunk: ChunkInfo, stored: ArraySlice<UInt8>) -> (any Error)? {
        let final = path(for: chunk.digest)
        if FileManager.default.fileExists(atPath: final) { return nil }
        let temp = "\(directory)/tmp/\(hexString(chunk.digest)).\(UInt64.random(in: 0...UInt64.max))"
        do {
            var header: [UInt8] = [0x46, 0x43, chunk.compression.rawValue, 0]
            for i in 0..<4 { header.append(UInt8(truncatingIfNeeded: chunk.uncompressedSize >> (8 * UInt32(i)))) }
            let fd = try FileDescriptor.open(temp, .createTruncate)
            do {
                try fd.write(header + stored)
                try fd.close()
            } catch {
                try? fd.close()
                throw error
            }
            let dir = (final as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if rename(temp, final) != 0 { throw SystemError.syscall("rename \(temp)", errno: Errno.current) }
            return nil
        } catch {
            try? FileManager.default.removeItem(atPath: temp)
            return error
        }
    }
}
