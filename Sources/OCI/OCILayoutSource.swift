import FerrySystem

/// The annotation that names an image's tag in an OCI layout's index.json (image-spec
/// annotations.md; what `skopeo copy … oci:DIR:TAG` and `umoci` write).
public let refNameAnnotation = "org.opencontainers.image.ref.name"

/// An OCI image layout directory (image-spec image-layout.md): `oci-layout`, `index.json`,
/// `blobs/<algorithm>/<hex>`.
public final class OCILayoutSource: ImageSource {
    public let directory: String
    /// The tag asked for, if any.
    public let tag: String?
    /// The top-level index.json.
    public let index: Index

    public var name: String { "oci:\(directory)" + (tag.map { ":\($0)" } ?? "") }

    /// Opens the layout; checks `oci-layout` and reads `index.json`.
    public init(directory: String, tag: String? = nil) throws {
        self.directory = directory
        self.tag = tag
        let label = "oci:\(directory)"
        let layoutBytes: [UInt8]
        do {
            layoutBytes = try FileSource(path: directory + "/oci-layout").readAll(limit: 1 << 16, what: "\(label)/oci-layout")
        } catch OCIError.io {
            throw OCIError.malformedImageStore(source: label, reason: "not an OCI image layout (no readable oci-layout file)")
        }
        let layout = try CanonicalJSON.decode(LayoutFile.self, from: layoutBytes, what: "\(label)/oci-layout")
        guard layout.imageLayoutVersion.hasPrefix("1.") else {
            throw OCIError.malformedImageStore(source: label, reason: "unsupported imageLayoutVersion \"\(layout.imageLayoutVersion)\" (expected 1.0.0)")
        }
        let indexBytes = try FileSource(path: directory + "/index.json").readAll(limit: manifestSizeLimit, what: "\(label)/index.json")
        index = try CanonicalJSON.decode(Index.self, from: indexBytes, what: "\(label)/index.json")
    }

    /// Tags of the images in index.json, in index order.
    public var tags: [String] { index.manifests.compactMap { $0.annotations?[refNameAnnotation] } }

    /// The index entry named by `tag`; without a tag, the only entry.
    public func rootDescriptor() throws -> Descriptor {
        if let tag {
            guard let match = index.manifests.last(where: { $0.annotations?[refNameAnnotation] == tag }) else {
                throw OCIError.tagNotFound(tag: tag, source: "oci:\(directory)", available: tags)
            }
            return match
        }
        guard index.manifests.count == 1, let only = index.manifests.first else {
            if index.manifests.isEmpty { throw OCIError.malformedImageStore(source: name, reason: "index.json lists no images") }
            throw OCIError.ambiguousImage(source: name, available: tags)
        }
        return only
    }

    /// Path of a blob in the layout.
    public func blobPath(_ digest: Digest) -> String { "\(directory)/blobs/\(digest.algorithm)/\(digest.hex)" }

    public func openBlob(_ descriptor: Descriptor) throws -> any ByteSource {
        let what = "blob \(descriptor.digest) in \(name)"
        let path = blobPath(descriptor.digest)
        let file: FileSource
        do { file = try FileSource(path: path) } catch {
            throw OCIError.notFound(what: what)
        }
        return try VerifyingSource(file, expecting: descriptor, what: what)
    }
}

/// The `oci-layout` file.
struct LayoutFile: Codable {
    var imageLayoutVersion: String
}
