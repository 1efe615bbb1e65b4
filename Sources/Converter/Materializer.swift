import Blob
import FerrySystem
import Foundation

/// `ferry materialize`: the bootstrap's EROFS part plus one file per blob holding the blob's
/// uncompressed address space, so the kernel can mount the bootstrap with `-o device=` (on
/// loop devices, or directly as files on kernels with file-backed EROFS).
public enum Materializer {
    /// Writes `bootstrap.erofs` and `<blob hex>.blob` files into `directory` (created if missing).
    /// Returns the written paths, bootstrap first, then devices in device order.
    public static func materialize(_ image: FerryImage, into directory: String) throws -> [String] {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ConversionError.io(path: directory, reason: "cannot create: \(error.localizedDescription)")
        }
        let bootstrapOut = directory + "/bootstrap.erofs"
        let input = try FileDescriptor.open(image.bootstrapPath, .readOnly)
        defer { try? input.close() }
        try writeFile(try input.read(at: 0, count: Int(image.erofsLength)), to: bootstrapOut)
        var written = [bootstrapOut]
        for (blob, path) in zip(image.metadata.blobs, image.blobPaths) {
            let out = "\(directory)/\(blob.hexDigest).blob"
            try BlobFiles.materialize(blob, blobPath: path, to: out)
            written.append(out)
        }
        return written
    }
}
