import Dispatch
import FerrySystem
import Foundation
public import OCI
import Synchronization

/// Runs an async registry call from synchronous code and waits for it: the one bridge from
/// synchronous callers into the client, for threads of their own — the CLI's main thread and the
/// converter's pipeline reading a `RegistryImageSource` — never a Swift concurrency thread (the
/// wait would hold one of its few threads while the call needs them).
public func waitForRegistry<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
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
        let fetched = try waitForRegistry { try await client.fetchManifest(reference) }
        if let expected = reference.digest, expected != fetched.digest {
            throw OCIError.digestMismatch(what: "manifest of \(name)", expected: expected, actual: fetched.digest)
        }
        // Keep the bytes: readManifest of the root is served from here without a second request.
        let path = scratch + "/" + fetched.digest.hex
        try writeFileAtomically(fetched.bytes, to: path, permissions: 0o600)
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
            let fetched = try waitForRegistry { try await client.fetchManifest(reference, reference: descriptor.digest.description) }
            try writeFileAtomically(fetched.bytes, to: path, permissions: 0o600)
        } else {
            _ = try waitForRegistry { try await client.fetchBlob(reference, digest: descriptor.digest, to: path, expectedSize: descriptor.size) }
        }
        downloaded[descriptor.digest] = path
        return try VerifyingSource(try FileSource(path: path), expecting: descriptor, what: "blob \(descriptor.digest) of \(name)")
    }
}
