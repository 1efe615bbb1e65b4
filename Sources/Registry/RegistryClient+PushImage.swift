public import OCI

/// A blob of an image to push, read from a file.
public struct BlobUpload: Sendable {
    public var path: String
    public var digest: Digest
    public var size: UInt64

    public init(path: String, digest: Digest, size: UInt64) {
        self.path = path
        self.digest = digest
        self.size = size
    }
}

extension RegistryClient {
    /// Pushes an image: its blobs from files (each skipped when the registry has it), its config
    /// bytes when given (a config that is also one of `blobs` needs none), then the manifest, by
    /// tag (or by digest when the reference has no tag). The manifest goes last, so a reader never
    /// finds a manifest whose blobs are missing. Returns the manifest's digest.
    public func pushImage(blobs: [BlobUpload], config: [UInt8]? = nil, manifest: [UInt8], mediaType: String,
                          to reference: RegistryReference) async throws -> Digest {
        for blob in blobs {
            _ = try await pushBlob(reference, fromFile: blob.path, digest: blob.digest, size: blob.size)
        }
        if let config { _ = try await pushBlob(reference, bytes: config) }
        return try await pushManifest(reference, bytes: manifest, mediaType: mediaType, reference: reference.tag)
    }
}
