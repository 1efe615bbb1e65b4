import Blob
import EROFS
import FerrySystem
import Foundation

/// `ferry export`: a self-contained EROFS image (metadata and uncompressed data in one file,
/// no extra devices), for kernels without on-demand support and for verification.
///
/// Layout: block 0 superblock, then every blob's uncompressed address space back to back, then
/// the metadata. Chunk references (device d, block b) become (device 0, start of blob d + b).
public enum Exporter {
    public static func export(_ image: FerryImage, to path: String) throws {
        let reader = try ImageReader(path: image.bootstrapPath)
        var tree = try BootstrapTree.read(reader)
        var bases: [UInt64] = []
        var next: UInt64 = 1
        for blob in image.metadata.blobs {
            bases.append(next)
            next += blob.uncompressedSize / blobBlockSize
        }
        guard next <= UInt64(UInt32.max) else { throw ConversionError.limitExceeded("the exported image exceeds 16 TiB") }
        for i in tree.nodes.indices {
            guard case let .regular(size, .chunked(log2, chunks)) = tree.nodes[i].content else { continue }
            let moved = try chunks.map { ref -> ChunkReference in
                guard case let .stored(device, block) = ref else { return ref }
                guard device >= 1, Int(device) <= bases.count else {
                    throw ConversionError.io(path: image.bootstrapPath, reason: "chunk refers to device \(device), which the image does not have")
                }
                return .stored(device: 0, block: UInt32(bases[Int(device) - 1] + UInt64(block)))
            }
            tree.nodes[i].content = .regular(size: size, data: .chunked(chunkSizeLog2: log2, chunks: moved))
        }
        tree.devices = []
        tree.dataBlocks = UInt32(next - 1)
        let encoded = try ImageWriter.encode(tree)

        let temp = path + ".ferry-tmp"
        let out = try FileDescriptor.open(temp, .createTruncate)
        do {
            try out.write(encoded.head, at: 0)
            for (i, blob) in image.metadata.blobs.enumerated() {
                try BlobFiles.writeAddressSpace(blob, blobPath: image.blobPaths[i], into: out, base: bases[i] * blobBlockSize)
            }
            try out.write(encoded.metadata, at: encoded.metadataOffset)
            try out.truncate(to: UInt64(encoded.totalBlocks) * blobBlockSize)
            try out.sync()
            try out.close()
            // An existing export is replaced (`ferry export` run again to the same file).
            try renameReplacing(temp, to: path)
        } catch {
            try? out.close()
            try? FileManager.default.removeItem(atPath: temp)
            throw error
        }
    }
}
