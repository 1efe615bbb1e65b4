import Dispatch
import FerrySystem
import Foundation
public import OCI
public import Registry
import Synchronization

/// Runs an async registry call from synchronous code (the CLI's main thread, never a Swift
/// concurrency thread) and waits for it.
func blocking<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let r: Result<T, any Error>
        do { r = .success(try await operation()) } catch { r = .failure(error) }
        result.withLock { $0 = r }
        done.signal()
    }
    done.wait()
    return try result.withLock { $0 }!.get()
}

/// An image in a registry read as an `ImageSource`: manifests are fetched and verified by the
/// client, each blob is downloaded once (streamed to a scratch file, digest checked) and then
/// read from disk, so memory stays bounded whatever the layer size.
public final class RegistryImageSource: ImageSource {
    public let name: String
    private let client: RegistryClient
    private let reference: RegistryReference
    private let scratch: String
    private var downloaded: [Digest: String] = [:]

    /// - Parameter scratch: a directory for downloaded blobs (removed by the caller).
    public init(client: RegistryClient, reference: RegistryReference, scratch: String) {
        self.client = client
        self.reference = reference
        self.scratch = scratch
        name = "docker://\(reference)"
    }

    public func rootDescriptor() throws -> Descriptor {
        let client = self.client, reference = self.reference
        let fetched = try blocking { try await client.fetchManifest(reference) }
        if let expected = reference.digest, expected != fetched.digest {
            throw OCIError.digestMismatch(what: "manifest of \(name)", expected: expected, actual: fetched.digest)
        }
        // Keep the bytes: readManifest of the root is served from here without a second request.
        let path = scratch + "/" + fetched.digest.hex
        try writeFile(fetched.bytes, to: path)
        downloaded[fetched.digest] = path
        return Descriptor(mediaType: fetched.mediaType, digest: fetched.digest, size: Int64(fetched.bytes.count))
    }

    public func openBlob(_ descriptor: Descriptor) throws -> any ByteSource {
        if let path = downloaded[descriptor.digest] {
            return try VerifyingSource(try FileSource(path: path), expecting: descriptor, what: "blob \(descriptor.digest) of \(name)")
        }
        let client = self.client, reference = self.reference
        let path = scratch + "/" + descriptor.digest.hex
        let isManifest = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList]
            .contains(descriptor.mediaType)
        if isManifest {
            let fetched = try blocking { try await client.fetchManifest(reference, reference: descriptor.digest.description) }
            try writeFile(fetched.bytes, to: path)
        } else {
            _ = try blocking { try await client.fetchBlob(reference, digest: descriptor.digest, to: path, expectedSize: descriptor.size) }
        }
        downloaded[descriptor.digest] = path
        return try VerifyingSource(try FileSource(path: path), expecting: descriptor, what: "blob \(descriptor.digest) of \(name)")
    }
}

/// Pushes a converted image to a registry: blobs (skipping those already there), config,
/// then the manifest by tag (or by digest when the reference has no tag).
public enum RegistryPush {
    public static func push(_ image: ConvertedImage, to reference: RegistryReference, client: RegistryClient) throws {
        var uploads: [(path: String, digest: Digest, size: UInt64)] = image.blobs.map {
            ($0.path, $0.descriptor.digest, UInt64($0.descriptor.size))
        }
        uploads.append((image.bootstrapPath, image.bootstrapDescriptor.digest, UInt64(image.bootstrapDescriptor.size)))
        for upload in uploads {
            _ = try blocking { try await client.pushBlob(reference, fromFile: upload.path, digest: upload.digest, size: upload.size) }
        }
        let config = image.config
        _ = try blocking { try await client.pushBlob(reference, bytes: config) }
        let manifest = image.manifestBytes
        _ = try blocking {
            try await client.pushManifest(reference, bytes: manifest, mediaType: MediaType.ociManifest, reference: reference.tag)
        }
    }
}
