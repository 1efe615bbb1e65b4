import Blob
import EROFS
import Foundation

/// `ferry check`: verifies a converted image's bootstrap structure, that every chunk reference
/// lands on a chunk of the right size, and every blob's and chunk's digest.
public enum ImageChecker {
    /// Figures `check` reports when everything is fine.
    public struct Report: Sendable, Codable {
        public var inodes = 0
        public var regularFiles = 0
        public var chunkReferences = 0
        public var holes = 0
        public var blobs = 0
        public var chunksVerified = 0
    }

    /// Throws `ConversionError.checkFailed` listing every problem found.
    public static func check(_ image: FerryImage) throws -> Report {
        var problems: [String] = []
        var report = Report()
        let reader = try ImageReader(path: image.bootstrapPath)
        let tree = try BootstrapTree.read(reader)
        report.inodes = tree.nodes.count

        let blobs = image.metadata.blobs
        if tree.devices.count != blobs.count {
            problems.append("bootstrap has \(tree.devices.count) devices, the chunk table lists \(blobs.count) blobs")
        }
        for (i, (slot, blob)) in zip(tree.devices, blobs).enumerated() {
            if slot.tag != Array(blob.hexDigest.utf8) { problems.append("device \(i + 1): tag does not name blob sha256:\(blob.hexDigest)") }
            if UInt64(slot.blocks) * blobBlockSize != blob.uncompressedSize {
                problems.append("device \(i + 1): \(slot.blocks) blocks, blob address space is \(blob.uncompressedSize) bytes")
            }
        }
        // Chunk starts of each blob, by block.
        let starts: [[UInt32: ChunkInfo]] = blobs.map { blob in
            Dictionary(blob.chunks.map { (UInt32($0.uncompressedOffset / blobBlockSize), $0) }, uniquingKeysWith: { a, _ in a })
        }
        for (n, node) in tree.nodes.enumerated() {
            guard case let .regular(size, data) = node.content else { continue }
            report.regularFiles += 1
            guard case let .chunked(log2, chunks) = data else { continue }
            let chunkSize = UInt64(1) << UInt64(log2)
            let expectedCount = Int((size + chunkSize - 1) / chunkSize)
            if chunks.count != expectedCount {
                problems.append("inode #\(n): \(chunks.count) chunk indexes for \(size) bytes (expected \(expectedCount))")
                continue
            }
            for (c, ref) in chunks.enumerated() {
                report.chunkReferences += 1
                guard case let .stored(device, block) = ref else { report.holes += 1; continue }
                let want = min(chunkSize, size - UInt64(c) * chunkSize)
                guard device >= 1, Int(device) <= starts.count else {
                    problems.append("inode #\(n) chunk \(c): device \(device) does not exist")
                    continue
                }
                guard let info = starts[Int(device) - 1][block] else {
                    problems.append("inode #\(n) chunk \(c): block \(block) of device \(device) is not the start of a chunk")
                    continue
                }
                if UInt64(info.uncompressedSize) != want {
                    problems.append("inode #\(n) chunk \(c): chunk holds \(info.uncompressedSize) bytes, the file needs \(want)")
                }
            }
        }
        for (blob, path) in zip(blobs, image.blobPaths) {
            report.blobs += 1
            if !FileManager.default.fileExists(atPath: path) {
                problems.append("blob sha256:\(blob.hexDigest): missing (\(path))")
                continue
            }
            let found = try BlobFiles.verify(blob, at: path)
            problems += found
            report.chunksVerified += blob.chunks.count - found.count
        }
        if !problems.isEmpty { throw ConversionError.checkFailed(problems) }
        return report
    }
}
