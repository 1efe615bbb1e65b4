public import Blob
public import OCI
import Foundation

/// A converted image on local disk: its manifest, its bootstrap and the files of its blobs.
public struct FerryImage: Sendable {
    public var reference: ImageReference
    public var manifest: Manifest
    public var bootstrapDescriptor: Descriptor
    /// Path of the bootstrap file (EROFS part followed by the chunk tables).
    public var bootstrapPath: String
    public var metadata: BootstrapMetadata
    /// Byte length of the EROFS part of the bootstrap.
    public var erofsLength: UInt64
    /// Path of each blob file, in device order (`metadata.blobs` order).
    public var blobPaths: [String]
    /// Descriptor of each blob, in device order.
    public var blobDescriptors: [Descriptor]

    /// Opens a converted image. Only local layouts (`oci:DIR[:TAG]`) are read by this build.
    public static func open(_ reference: ImageReference) throws -> FerryImage {
        guard case let .ociLayout(path, _) = reference else {
            throw ConversionError.unsupportedTransport("\(reference): only oci:DIR[:TAG] images can be opened by this build")
        }
        let source = try ImageSources.open(reference)
        let resolved = try source.resolve(platform: nil)
        guard let bootstrap = resolved.manifest.layers.last(where: {
            MediaType.isFerryBootstrap($0)
        }) else { throw ConversionError.notAFerryImage(reference.description) }
        let blobDirectory = path + "/blobs/"
        func file(_ d: Digest) -> String { blobDirectory + d.algorithm + "/" + d.hex }
        let bootstrapPath = file(bootstrap.digest)
        let (metadata, erofsLength) = try BootstrapMetadata.read(bootstrapAt: bootstrapPath)
        var paths: [String] = []
        var descriptors: [Descriptor] = []
        for blob in metadata.blobs {
            let digest = Digest(sha256: blob.digest)
            guard let descriptor = resolved.manifest.layers.first(where: { $0.digest == digest }) else {
                throw ConversionError.notAFerryImage("\(reference): blob \(digest) of the bootstrap is not a layer of the manifest;")
            }
            paths.append(file(digest))
            descriptors.append(descriptor)
        }
        return FerryImage(reference: reference, manifest: resolved.manifest, bootstrapDescriptor: bootstrap, bootstrapPath: bootstrapPath,
                          metadata: metadata, erofsLength: erofsLength, blobPaths: paths, blobDescriptors: descriptors)
    }

    /// This image as a chunk dictionary for `--chunk-dict`.
    public func chunkDictionary() -> ChunkDictionary {
        ChunkDictionary(metadata: metadata, blobPaths: blobPaths, blobDescriptors: blobDescriptors)
    }
}
