public import OCI

/// Random access to blobs by digest: what the daemon reads chunks through.
public protocol BlobSource: Sendable {
    /// The bytes `range` of `blob`, exactly. Cancelling the calling task aborts the read.
    func read(blob: Digest, range: Range<UInt64>) async throws -> [UInt8]
}

/// A `BlobSource` backed by one registry repository (with its mirrors), using ranged GETs over
/// pooled connections. Each read is bounded by `timeout` and retried per the client's policy.
public struct RegistryBlobSource: BlobSource {
    public let client: RegistryClient
    /// The repository the blobs live in (tag and digest are ignored).
    public let repository: RegistryReference
    public let timeout: Duration?

    public init(client: RegistryClient, repository: RegistryReference, timeout: Duration? = nil) {
        self.client = client
        self.repository = repository
        self.timeout = timeout ?? client.options.rangeRequestTimeout
    }

    public func read(blob: Digest, range: Range<UInt64>) async throws -> [UInt8] {
        try await client.readRange(repository, digest: blob, range: range, timeout: timeout)
    }
}
