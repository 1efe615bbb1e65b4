import FerrySystem
import Foundation
public import OCI

/// `ferry pull`: copies an image (from a registry, a layout or an archive) into a local OCI
/// layout unchanged, every blob verified against its digest on the way. (`ferry push` is
/// `RegistryClient.pushImage`.)
public enum ImageCopy {
    /// Copies the image `source` resolves to into a new layout directory at `path` (tag `tag`).
    public static func pull(from source: any ImageSource, into path: String, tag: String?) throws -> Digest {
        let target = OCILayoutTarget(path: path, tag: tag)
        let work = try target.makeWorkDirectory()
        do {
            let resolved = try source.resolve(platform: nil)
            let blobs = work + "/blobs/sha256/"
            for descriptor in resolved.manifest.layers + [resolved.manifest.config] {
                let input = try source.openBlob(descriptor)
                let out = try FileDescriptor.open(blobs + descriptor.digest.hex, .createTruncate)
                defer { try? out.close() }
                while let piece = try input.read(upTo: 1 << 20), !piece.isEmpty { try out.write(piece) }
            }
            try writeFile(resolved.manifestBytes, to: blobs + resolved.manifestDigest.hex)
            try OCILayoutTarget.writeIndex(in: work, manifest: resolved.manifestDescriptor, tag: tag)
            try rename(work, to: path)
            return resolved.manifestDigest
        } catch {
            try? FileManager.default.removeItem(atPath: work)
            throw error
        }
    }
}
