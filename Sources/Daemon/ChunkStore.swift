public import Blob
import FerrySystem
import Foundation
import Synchronization

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

    /// One stored chunk, for eviction: its digest (hex), its file's size and when it was last
    /// saved or loaded (seconds since 1970; the file's mtime for chunks of earlier runs).
    public struct Entry: Sendable, Equatable {
        public var digest: String
        public var bytes: UInt64
        public var lastUse: Double
    }
    /// What is stored, built by one scan on first use and kept current by save/load/remove.
    private let index = Mutex<[String: Entry]?>(nil)
    /// Why writes are suspended (the disk is full), or nil while the store accepts chunks.
    private let suspension = Mutex<String?>(nil)

    /// Opens (creating if needed) a store rooted at `directory`.
    public init(directory: String) throws {
        self.directory = directory
        do {
            for sub in ["/chunks", "/tmp"] {
                try FileManager.default.createDirectory(atPath: directory + sub, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
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
            forget(hexString(chunk.digest))
            return nil
        }
        touch(hexString(chunk.digest), bytes: size)
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
    /// On a full disk (`ENOSPC`, `EDQUOT`) writes are suspended: later saves are skipped until
    /// `resumeWrites()` (after eviction made room); the error is returned once, for one log line.
    @discardableResult
    public func save(_ chunk: ChunkInfo, stored: ArraySlice<UInt8>) -> (any Error)? {
        if suspension.withLock({ $0 }) != nil { return nil }
        let final = path(for: chunk.digest)
        if FileManager.default.fileExists(atPath: final) { return nil }
        let temp = "\(directory)/tmp/\(hexString(chunk.digest)).\(UInt64.random(in: 0...UInt64.max))"
        do {
            var header: [UInt8] = [0x46, 0x43, chunk.compression.rawValue, 0]
            for i in 0..<4 { header.append(UInt8(truncatingIfNeeded: chunk.uncompressedSize >> (8 * UInt32(i)))) }
            let fd = try FileDescriptor.open(temp, .createTruncate, permissions: 0o600)
            do {
                // Two writes: `header + stored` would copy every chunk once more.
                try fd.write(header)
                try fd.write(stored)
                try fd.close()
            } catch {
                try? fd.close()
                throw error
            }
            // The 256 prefix directories exist after the first few saves: create one only when
            // the rename says it is missing (a directory call per chunk cost 4 % of a cold read).
            if rename(temp, final) != 0 {
                let failure = Errno.current
                guard failure == ENOENT else { throw SystemError.syscall("rename \(temp)", errno: failure) }
                let dir = (final as NSString).deletingLastPathComponent
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                if rename(temp, final) != 0 { throw SystemError.syscall("rename \(temp)", errno: Errno.current) }
            }
            touch(hexString(chunk.digest), bytes: UInt64(header.count + stored.count))
            return nil
        } catch {
            try? FileManager.default.removeItem(atPath: temp)
            if case let SystemError.syscall(_, code) = error, code == ENOSPC || code == EDQUOT {
                let first = suspension.withLock { s -> Bool in
                    defer { s = "\(error)" }
                    return s == nil
                }
                return first ? ChunkStoreError.diskFull(directory: directory, reason: "\(error)") : nil
            }
            return error
        }
    }

    /// Why saves are skipped (disk full), or nil.
    public var writesSuspended: String? { suspension.withLock { $0 } }

    /// Accepts chunks again (called after eviction freed space).
    public func resumeWrites() { suspension.withLock { $0 = nil } }

    /// Every stored chunk (scans the directory once per process).
    public func entries() -> [Entry] {
        index.withLock { index in
            if index == nil { index = scan() }
            return Array(index?.values ?? [:].values)
        }
    }

    /// Total bytes of the stored chunk files.
    public var storedBytes: UInt64 { entries().reduce(0) { $0 + $1.bytes } }

    /// Removes a chunk; returns the bytes freed.
    @discardableResult
    public func remove(digest hex: String) -> UInt64 {
        let file = "\(directory)/chunks/\(hex.prefix(2))/\(hex.dropFirst(2))"
        guard unlink(file) == 0 else { return 0 }
        return index.withLock { $0?.removeValue(forKey: hex)?.bytes ?? 0 }
    }

    private func touch(_ hex: String, bytes: UInt64) {
        let now = Date().timeIntervalSince1970
        index.withLock { index in
            guard index != nil else { return }  // not scanned yet: the scan will find the file
            index?[hex] = Entry(digest: hex, bytes: bytes, lastUse: now)
        }
    }

    private func forget(_ hex: String) { index.withLock { _ = $0?.removeValue(forKey: hex) } }

    private func scan() -> [String: Entry] {
        var found: [String: Entry] = [:]
        let root = directory + "/chunks"
        for prefix in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            for rest in (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(prefix)")) ?? [] {
                guard let attributes = try? FileManager.default.attributesOfItem(atPath: "\(root)/\(prefix)/\(rest)") else { continue }
                let size = (attributes[.size] as? NSNumber)?.uint64Value ?? 0
                let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
                found[prefix + rest] = Entry(digest: prefix + rest, bytes: size, lastUse: modified)
            }
        }
        return found
    }
}

/// Why the chunk store stopped accepting chunks.
public enum ChunkStoreError: Error, Sendable, CustomStringConvertible {
    case diskFull(directory: String, reason: String)

    public var description: String {
        switch self {
        case let .diskFull(directory, reason):
            return "the disk of the chunk store \(directory) is full (\(reason)); chunks are no longer stored (reads go on from the network) until eviction frees space — set cache_limit or run `ferry gc`"
        }
    }
}
