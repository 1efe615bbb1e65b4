import Blob
import EROFS
import FerrySystem
import OCI

/// `ferry inspect`: what a converted image holds, from its manifest and bootstrap alone.
public enum ImageInspector {
    /// One blob's figures.
    public struct BlobSummary: Sendable, Codable {
        public var digest: String
        public var compressedBytes: UInt64
        public var uncompressedBytes: UInt64
        public var chunks: Int
    }

    /// The image's figures (`--json` prints this as it is).
    public struct Summary: Sendable, Codable {
        public var manifest: String
        public var sourceManifest: String?
        public var chunkSize: UInt64
        public var compression: String
        public var bootstrapBytes: UInt64
        public var erofsBytes: UInt64
        public var blobs: [BlobSummary]
        public var inodes: Int
        public var regularFiles: Int
        public var directories: Int
        public var symlinks: Int
        public var fileBytes: UInt64
        /// Bytes the files reference through chunks (counting each reference).
        public var referencedChunkBytes: UInt64
        /// Bytes of distinct chunks stored in the blobs (uncompressed).
        public var storedChunkBytes: UInt64
        public var compressedBytes: UInt64
        /// referenced / stored: how much deduplication saved.
        public var dedupRatio: Double
        public var prefetch: [String]
    }

    public static func summarize(_ image: FerryImage) throws -> Summary {
        let reader = try ImageReader(path: image.bootstrapPath)
        let tree = try BootstrapTree.read(reader)
        var files = 0, dirs = 0, links = 0
        var fileBytes: UInt64 = 0, referenced: UInt64 = 0
        let chunkSize = UInt64(1) << UInt64(image.metadata.chunkSizeLog2)
        for node in tree.nodes {
            switch node.content {
            case .directory: dirs += 1
            case .symlink: links += 1
            case let .regular(size, data):
                files += 1
                fileBytes += size
                if case let .chunked(_, chunks) = data {
                    for (c, ref) in chunks.enumerated() where ref != .hole {
                        referenced += min(chunkSize, size - UInt64(c) * chunkSize)
                    }
                }
            default: break
            }
        }
        let stored = image.metadata.blobs.reduce(UInt64(0)) { $0 + $1.chunks.reduce(0) { $0 + UInt64($1.uncompressedSize) } }
        let compressed = image.metadata.blobs.reduce(UInt64(0)) { $0 + $1.compressedSize }
        let manifestDigest = Digest(sha256: SHA256.hash((try? CanonicalJSON.encode(image.manifest)) ?? []))
        return Summary(
            manifest: manifestDigest.description, sourceManifest: image.manifest.annotations?[FerryAnnotation.sourceManifest],
            chunkSize: chunkSize, compression: image.metadata.compression.description,
            bootstrapBytes: UInt64(image.bootstrapDescriptor.size), erofsBytes: image.erofsLength,
            blobs: image.metadata.blobs.map {
                BlobSummary(digest: "sha256:\($0.hexDigest)", compressedBytes: $0.compressedSize, uncompressedBytes: $0.uncompressedSize,
                            chunks: $0.chunks.count)
            },
            inodes: tree.nodes.count, regularFiles: files, directories: dirs, symlinks: links, fileBytes: fileBytes,
            referencedChunkBytes: referenced, storedChunkBytes: stored, compressedBytes: compressed,
            dedupRatio: stored == 0 ? 1 : Double(referenced) / Double(stored),
            prefetch: image.metadata.prefetch.map { String(decoding: $0, as: UTF8.self) })
    }

    /// One line per object below `path` (an `ls -lR`-like listing), from the bootstrap alone.
    public static func tree(_ image: FerryImage, below path: String) throws -> [String] {
        let reader = try ImageReader(path: image.bootstrapPath)
        let start = try reader.lookup(path: path)
        var lines: [String] = []
        func describe(_ inode: Inode, _ name: String) throws -> String {
            let kind: String
            switch inode.type {
            case .directory: kind = "d"
            case .regular: kind = "-"
            case .symlink: kind = "l"
            case .characterDevice: kind = "c"
            case .blockDevice: kind = "b"
            case .fifo: kind = "p"
            case .socket: kind = "s"
            }
            var line = "\(kind)\(String(inode.permissions, radix: 8).leftPad(4)) \(inode.uid)/\(inode.gid) \(String(inode.size).leftPad(10, " ")) \(name)"
            if inode.type == .symlink { line += " -> " + String(decoding: try reader.symlinkTarget(inode), as: UTF8.self) }
            return line
        }
        func visit(_ inode: Inode, _ name: String) throws {
            lines.append(try describe(inode, name))
            guard inode.type == .directory else { return }
            for entry in try reader.entries(of: inode) where !entry.isDotOrDotDot {
                let child = try reader.inode(nid: entry.nid)
                try visit(child, (name == "/" ? "" : name) + "/" + String(decoding: entry.name, as: UTF8.self))
            }
        }
        try visit(start, path.isEmpty ? "/" : path)
        return lines
    }
}

extension String {
    func leftPad(_ width: Int, _ pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

extension ImageInspector {
    /// Where one chunk of a file is stored.
    public struct ChunkLocation: Sendable, Codable {
        public var index: Int
        /// Hex digest of the blob, or nil for a hole.
        public var blob: String?
        public var digest: String?
        public var compressedOffset: UInt64
        public var compressedSize: UInt32
        public var uncompressedOffset: UInt64
        public var uncompressedSize: UInt32
        public var alignedSize: UInt64
        public var compression: String
    }

    /// The chunks of the regular file at `path`, in file order.
    public static func chunks(_ image: FerryImage, of path: String) throws -> [ChunkLocation] {
        let reader = try ImageReader(path: image.bootstrapPath)
        let inode = try reader.lookup(path: path)
        guard inode.type == .regular, case .chunked = inode.layout else { return [] }
        let blobs = image.metadata.blobs
        return try reader.chunks(of: inode).enumerated().map { i, ref in
            guard case let .stored(device, block) = ref, device >= 1, Int(device) <= blobs.count,
                  let c = blobs[Int(device) - 1].chunks.first(where: { $0.uncompressedOffset == UInt64(block) * blobBlockSize }) else {
                return ChunkLocation(index: i, blob: nil, digest: nil, compressedOffset: 0, compressedSize: 0, uncompressedOffset: 0,
                                     uncompressedSize: 0, alignedSize: 0, compression: "hole")
            }
            return ChunkLocation(index: i, blob: blobs[Int(device) - 1].hexDigest, digest: hexString(c.digest),
                                 compressedOffset: c.compressedOffset, compressedSize: c.compressedSize,
                                 uncompressedOffset: c.uncompressedOffset, uncompressedSize: c.uncompressedSize,
                                 alignedSize: c.alignedSize, compression: c.compression.description)
        }
    }
}
