import FerrySystem
import Foundation
public import OCI
public import Registry

/// `ferry pull` / `ferry push`: moves a (converted) image between a registry and a local OCI
/// layout unchanged, every blob verified against its digest on the way.
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

    /// Pushes the image of a local layout to a registry: blobs first, the manifest last.
    public static func push(from layout: OCILayoutSource, layoutPath: String, to reference: RegistryReference,
                            client: RegistryClient) throws -> Digest {
        let resolved = try layout.resolve(platform: nil)
        for descriptor in resolved.manifest.layers + [resolved.manifest.config] {
            let path = layoutPath + "/blobs/\(descriptor.digest.algorithm)/\(descriptor.digest.hex)"
            _ = try blocking {
                try await client.pushBlob(reference, fromFile: path, digest: descriptor.digest, size: UInt64(descriptor.size))
            }
        }
        let bytes = resolved.manifestBytes
        let mediaType = resolved.manifest.mediaType ?? MediaType.ociManifest
        return try blocking { try await client.pushManifest(reference, bytes: bytes, mediaType: mediaType, reference: reference.tag) }
    }
}
