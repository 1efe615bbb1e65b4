/// The parts of an image configuration Ferry looks at; the raw bytes are kept alongside for
/// everything else (environment, entrypoint, history).
public struct ImageConfiguration: Sendable, Hashable, Codable {
    public var architecture: String?
    public var os: String?
    public var variant: String?
    public var rootfs: RootFS?

    /// `rootfs` of an image config: the digests of the uncompressed layers.
    public struct RootFS: Sendable, Hashable, Codable {
        public var type: String?
        public var diffIDs: [Digest]?

        enum CodingKeys: String, CodingKey {
            case type
            case diffIDs = "diff_ids"
        }
    }

    /// The platform the config declares, when it names both OS and architecture.
    public var platform: Platform? {
        guard let os, let architecture, !os.isEmpty, !architecture.isEmpty else { return nil }
        return Platform(os: os, architecture: architecture, variant: variant)
    }
}

/// One image chosen from a source: its manifest exactly as stored (for digests and re-pushing)
/// and its verified config.
public struct ResolvedImage: Sendable {
    /// Descriptor of the manifest (media type, digest of `manifestBytes`, size).
    public var manifestDescriptor: Descriptor
    public var manifest: Manifest
    public var manifestBytes: [UInt8]
    public var configBytes: [UInt8]
    public var configuration: ImageConfiguration

    /// Digest of the manifest bytes.
    public var manifestDigest: Digest { manifestDescriptor.digest }
}

/// Somewhere images are read from: an OCI layout, a docker archive, a registry.
///
/// A source provides the descriptor of the image its reference names (a manifest or an index)
/// and verified access to blobs; `resolve(platform:)` (implemented once, in an extension)
/// walks indexes down to one manifest and reads its config.
public protocol ImageSource: AnyObject {
    /// The reference, for messages (e.g. "oci:/tmp/img:latest").
    var name: String { get }
    /// The manifest or index the reference names.
    func rootDescriptor() throws -> Descriptor
    /// A manifest's or index's bytes, verified against the descriptor. The default reads
    /// `openBlob` to the end, up to `manifestSizeLimit`.
    func readManifest(_ descriptor: Descriptor) throws -> [UInt8]
    /// A blob's bytes; the stream throws `digestMismatch`/`sizeMismatch` at its end when the
    /// bytes do not match the descriptor.
    func openBlob(_ descriptor: Descriptor) throws -> any ByteSource
}

/// Largest manifest or index accepted (the distribution spec's registries use 4 MiB).
public let manifestSizeLimit = 4 << 20
/// Largest image config accepted (configs with long histories reach a few MiB).
public let configSizeLimit = 64 << 20

extension ImageSource {
    public func readManifest(_ descriptor: Descriptor) throws -> [UInt8] {
        guard descriptor.size <= Int64(manifestSizeLimit) else {
            throw OCIError.tooLarge(what: "manifest \(descriptor.digest) in \(name)", limit: Int64(manifestSizeLimit))
        }
        return try openBlob(descriptor).readAll(limit: manifestSizeLimit, what: "manifest \(descriptor.digest) in \(name)")
    }

    /// A layer's uncompressed tar stream: verified against the descriptor, decompressed as its
    /// media type says (unknown media types throw `unsupportedMediaType`).
    public func openLayer(_ descriptor: Descriptor) throws -> any ByteSource {
        let compression = try LayerCompression(mediaType: descriptor.mediaType, what: "layer \(descriptor.digest)")
        return try DecompressingSource(try openBlob(descriptor), compression: compression, layer: descriptor.digest.description)
    }

    /// Chooses the image for `platform` and reads its manifest and config.
    ///
    /// Indexes (OCI indexes, Docker manifest lists, nested ones) are searched for `platform`
    /// (the machine's own when nil); no match throws `noMatchingPlatform` listing what there is.
    /// A single manifest is taken as it is, unless `platform` was given and its config names
    /// another platform.
    public func resolve(platform: Platform?) throws -> ResolvedImage {
        var available: [Platform] = []
        let wanted = platform ?? Platform.current
        guard let (descriptor, bytes) = try findManifest(try rootDescriptor(), platform: wanted, depth: 0, available: &available) else {
            var seen = Set<Platform>()
            throw OCIError.noMatchingPlatform(requested: wanted, available: available.filter { seen.insert($0).inserted })
        }
        let manifest = try CanonicalJSON.decode(Manifest.self, from: bytes, what: "manifest \(descriptor.digest) in \(name)")
        guard manifest.config.size <= Int64(configSizeLimit) else {
            throw OCIError.tooLarge(what: "config \(manifest.config.digest) in \(name)", limit: Int64(configSizeLimit))
        }
        let configBytes = try openBlob(manifest.config).readAll(limit: configSizeLimit, what: "config \(manifest.config.digest) in \(name)")
        let configuration = try CanonicalJSON.decode(ImageConfiguration.self, from: configBytes, what: "config \(manifest.config.digest) in \(name)")
        if let platform, let declared = configuration.platform, !platform.matches(declared) {
            throw OCIError.noMatchingPlatform(requested: platform, available: [declared])
        }
        return ResolvedImage(manifestDescriptor: descriptor, manifest: manifest, manifestBytes: bytes,
                             configBytes: configBytes, configuration: configuration)
    }

    /// Depth-first search for the manifest for `platform` below `descriptor`. In an index, exact
    /// matches (variant included) are tried first, then matches with an unspecified variant, then
    /// entries without a platform (nested indexes). Attestation manifests (platform
    /// unknown/unknown) never match. Collects the platforms seen into `available`.
    private func findManifest(_ descriptor: Descriptor, platform: Platform, depth: Int,
                              available: inout [Platform]) throws -> (Descriptor, [UInt8])? {
        guard depth < 8 else { throw OCIError.malformedImageStore(source: name, reason: "indexes nest more than 8 levels deep") }
        let bytes = try readManifest(descriptor)
        let probe = try CanonicalJSON.decode(ManifestProbe.self, from: bytes, what: "manifest \(descriptor.digest) in \(name)")
        let mediaType = knownType(descriptor.mediaType) ?? knownType(probe.mediaType ?? "")
            ?? (probe.manifests != nil ? MediaType.ociIndex : probe.config != nil ? MediaType.ociManifest : nil)
        switch mediaType {
        case MediaType.ociManifest, MediaType.dockerManifest:
            var resolved = descriptor
            resolved.mediaType = mediaType ?? MediaType.ociManifest
            return (resolved, bytes)
        case MediaType.ociIndex, MediaType.dockerManifestList:
            let index = try CanonicalJSON.decode(Index.self, from: bytes, what: "index \(descriptor.digest) in \(name)")
            let candidates = index.manifests.filter { d in
                d.annotations?["vnd.docker.reference.type"] != "attestation-manifest" && d.platform?.os != "unknown"
            }
            available += candidates.compactMap(\.platform)
            let exact = candidates.filter { d in
                d.platform.map { $0.os == platform.os && $0.architecture == platform.architecture && $0.variant == platform.variant } ?? false
            }
            let loose = candidates.filter { d in d.platform.map(platform.matches) ?? false }
            let unlabeled = candidates.filter { $0.platform == nil }
            for candidate in exact + loose + unlabeled {
                if let found = try findManifest(candidate, platform: platform, depth: depth + 1, available: &available) { return found }
            }
            return nil
        default:
            throw OCIError.unsupportedMediaType(what: "manifest \(descriptor.digest) in \(name)",
                                                mediaType: probe.mediaType ?? descriptor.mediaType)
        }
    }

    private func knownType(_ mediaType: String) -> String? {
        [MediaType.ociIndex, MediaType.dockerManifestList, MediaType.ociManifest, MediaType.dockerManifest].contains(mediaType) ? mediaType : nil
    }
}

/// Just enough of a manifest or index to tell which one it is.
private struct ManifestProbe: Decodable {
    var mediaType: String?
    var manifests: [Descriptor]?
    var config: Descriptor?
}
