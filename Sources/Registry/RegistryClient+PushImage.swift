public import OCI

/// A blob of an image to push: its descriptor (digest and size) and the file holding it.
public struct BlobUpload: Sendable {
    public var path: String
    public var descriptor: Descriptor

    public init(path: String, descriptor: Descriptor) {
        self.path = path
        self.descriptor = descriptor
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
            _ = try await pushBlob(reference, fromFile: blob.path, digest: blob.descriptor.digest, size: UInt64(blob.descriptor.size))
        }
        if let config { _ = try await pushBlob(reference, bytes: config) }
        return try await pushManifest(reference, bytes: manifest, mediaType: mediaType, reference: reference.tag)
    }
}
