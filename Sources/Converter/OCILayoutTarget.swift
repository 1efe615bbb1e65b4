public import OCI
import FerrySystem
import Foundation

/// Writes a converted image as an OCI image layout directory (`oci:DIR[:TAG]`).
///
/// The directory appears only when everything is written: the conversion works in a temporary
/// sibling directory which is renamed into place at the end, so a failed conversion leaves no
/// half-written target.
public struct OCILayoutTarget: Sendable {
    public let path: String
    public let tag: String?

    public init(path: String, tag: String?) {
        self.path = path
        self.tag = tag
    }

    /// Creates the temporary sibling directory to convert into (blobs are then renamed, not copied).
    public func makeWorkDirectory() throws -> String {
        if FileManager.default.fileExists(atPath: path) { throw ConversionError.targetExists(path) }
        let parent = (path as NSString).deletingLastPathComponent
        let base = (path as NSString).lastPathComponent
        let work = (parent.isEmpty ? "." : parent) + "/.\(base).ferry-tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        do {
            try FileManager.default.createDirectory(atPath: work + "/blobs/sha256", withIntermediateDirectories: true)
        } catch {
            throw ConversionError.io(path: work, reason: "cannot create: \(error.localizedDescription)")
        }
        return work
    }

    /// Writes `index.json` (naming one manifest, with its tag) and `oci-layout` into the layout
    /// directory `workDirectory` (conversions, `ferry pull`, `inspect docker://`'s scratch layout).
    public static func writeIndex(in workDirectory: String, manifest: Descriptor, tag: String?) throws {
        var descriptor = Descriptor(mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size)
        if let tag { descriptor.annotations = ["org.opencontainers.image.ref.name": tag] }
        try writeFile(try CanonicalJSON.encode(Index(manifests: [descriptor])), to: workDirectory + "/index.json")
        try writeFile(Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: workDirectory + "/oci-layout")
    }

    /// Lays the converted image out in `workDirectory` and renames it to `path`.
    public func commit(_ image: ConvertedImage, workDirectory: String) throws {
        let blobs = workDirectory + "/blobs/sha256/"
        func put(_ bytes: [UInt8], _ digest: Digest) throws { try writeFile(bytes, to: blobs + digest.hex) }
        for blob in image.blobs {
            let dest = blobs + blob.descriptor.digest.hex
            if blob.fromDictionary {
                try FileManager.default.copyItem(atPath: blob.path, toPath: dest)
            } else {
                try rename(blob.path, to: dest)
            }
        }
        try rename(image.bootstrapPath, to: blobs + image.bootstrapDescriptor.digest.hex)
        try put(image.config, image.configDescriptor.digest)
        try put(image.manifestBytes, image.manifestDigest)
        try Self.writeIndex(in: workDirectory, manifest: Descriptor(mediaType: MediaType.ociManifest, digest: image.manifestDigest,
                                                               size: Int64(image.manifestBytes.count)), tag: tag)
        // Anything left over (temporary blob files of a failed step) must not land in the target.
        for name in try FileManager.default.contentsOfDirectory(atPath: workDirectory) where !["blobs", "index.json", "oci-layout"].contains(name) {
            try FileManager.default.removeItem(atPath: workDirectory + "/" + name)
        }
        if FileManager.default.fileExists(atPath: path) { throw ConversionError.targetExists(path) }
        try rename(workDirectory, to: path)
    }
}
