import Foundation

/// A content digest such as `sha256:0123…`. Only sha256 is produced; sha512 is accepted on read.
public struct Digest: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    /// The algorithm, e.g. "sha256".
    public let algorithm: String
    /// Lower-case hexadecimal digest.
    public let hex: String

    /// Parses "algorithm:hex"; fails on anything else (an unknown algorithm, bad hex, wrong length).
    public init(parsing text: String) throws {
        guard let colon = text.firstIndex(of: ":") else { throw OCIError.malformedDigest(text) }
        let algorithm = String(text[..<colon])
        let hex = String(text[text.index(after: colon)...])
        let expectedLength: Int
        switch algorithm {
        case "sha256": expectedLength = 64
        case "sha512": expectedLength = 128
        default: throw OCIError.malformedDigest(text)
        }
        guard hex.count == expectedLength, hex.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw OCIError.malformedDigest(text)
        }
        self.algorithm = algorithm
        self.hex = hex
    }

    /// A sha256 digest from its 32 raw bytes.
    public init(sha256 bytes: [UInt8]) {
        algorithm = "sha256"
        hex = bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    public var description: String { "\(algorithm):\(hex)" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    public static func < (a: Digest, b: Digest) -> Bool { a.description < b.description }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// Media types Ferry reads and writes.
public enum MediaType {
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayerTar = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let dockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar"
    public static let dockerForeignLayerGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    /// Not in Docker's spec, but written by some tools for zstd layers in Docker manifests.
    public static let dockerLayerZstd = "application/vnd.docker.image.rootfs.diff.tar.zstd"
    public static let ociNondistributableLayerTar = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    public static let ociNondistributableLayerGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    public static let ociNondistributableLayerZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

    /// Ferry's EROFS metadata image (the bootstrap), with the chunk tables appended. Under
    /// `application/vnd.oci.image.layer.` so that containerd treats it as a layer (its
    /// `images.IsLayerType` goes by that prefix) and hands it to a snapshotter instead of
    /// downloading it as an unknown blob.
    public static let ferryBootstrap = "application/vnd.oci.image.layer.ferry.bootstrap.v1"
    /// One Ferry data blob: compressed chunks, back to back (a layer type for containerd, as above).
    public static let ferryBlob = "application/vnd.oci.image.layer.ferry.blob.v1"
    /// The bootstrap's media type in images converted before Ferry 0.4 (still read).
    public static let legacyFerryBootstrap = "application/vnd.ferry.bootstrap.v1.erofs"
    /// A blob's media type in images converted before Ferry 0.4 (still read).
    public static let legacyFerryBlob = "application/vnd.ferry.blob.v1.chunks"

    /// Whether a layer is a Ferry bootstrap, by media type (current or legacy) or annotation.
    public static func isFerryBootstrap(_ layer: Descriptor) -> Bool {
        layer.mediaType == ferryBootstrap || layer.mediaType == legacyFerryBootstrap
            || layer.annotations?[FerryAnnotation.bootstrap] == "true"
    }
    /// The artifact type of a converted image's manifest.
    public static let ferryArtifact = "application/vnd.ferry.image.v1"
}

/// Annotation keys Ferry writes on converted images.
public enum FerryAnnotation {
    /// On the bootstrap layer: "true".
    public static let bootstrap = "dev.ferry.bootstrap"
    /// On a blob layer: the chunk size in bytes.
    public static let chunkSize = "dev.ferry.chunk-size"
    /// On a blob layer: the compressor ("lz4", "zstd", "none").
    public static let compressor = "dev.ferry.compressor"
    /// On a blob layer: the uncompressed size of its address space.
    public static let uncompressedSize = "dev.ferry.uncompressed-size"
    /// On the manifest: the digest of the source manifest the image was converted from.
    public static let sourceManifest = "dev.ferry.source-manifest"
    /// On every layer: "blob" or "bootstrap". containerd passes a layer's annotations under
    /// `containerd.io/snapshot/` (and only those) to the snapshotter as labels of the snapshot
    /// it prepares for the layer, so this tells Ferry's snapshotter which layers are Ferry's.
    public static let snapshotLayer = "containerd.io/snapshot/ferry.layer"
}

/// A platform as used in image indexes and `--platform os/arch[/variant]`.
public struct Platform: Sendable, Hashable, Codable, CustomStringConvertible {
    public var architecture: String
    public var os: String
    public var variant: String?
    public var osVersion: String?

    enum CodingKeys: String, CodingKey {
        case architecture, os, variant
        case osVersion = "os.version"
    }

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// Parses "os/arch" or "os/arch/variant".
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { throw OCIError.malformedPlatform(text) }
        self.init(os: parts[0], architecture: parts[1], variant: parts.count == 3 ? parts[2] : nil)
    }

    /// The platform of the machine Ferry runs on.
    public static var current: Platform {
        #if arch(x86_64)
        return Platform(os: "linux", architecture: "amd64")
        #elseif arch(arm64)
        return Platform(os: "linux", architecture: "arm64", variant: "v8")
        #else
        return Platform(os: "linux", architecture: "unknown")
        #endif
    }

    /// Whether an index entry's platform satisfies this requested platform (variant only when asked).
    public func matches(_ other: Platform) -> Bool {
        guard os == other.os, architecture == other.architecture else { return false }
        if let variant, let otherVariant = other.variant { return variant == otherVariant }
        return true
    }

    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }
}

/// An OCI content descriptor.
public struct Descriptor: Sendable, Hashable, Codable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var annotations: [String: String]?
    public var platform: Platform?
    public var urls: [String]?
    public var artifactType: String?

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil, platform: Platform? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.platform = platform
    }
}

/// An OCI image manifest (also read from Docker schema 2 manifests, which share the shape).
public struct Manifest: Sendable, Hashable, Codable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var annotations: [String: String]?

    public init(mediaType: String? = MediaType.ociManifest, artifactType: String? = nil, config: Descriptor,
                layers: [Descriptor], annotations: [String: String]? = nil) {
        schemaVersion = 2
        self.mediaType = mediaType
        self.artifactType = artifactType
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }
}

/// An OCI image index (also read from Docker manifest lists).
public struct Index: Sendable, Hashable, Codable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
    public var annotations: [String: String]?

    public init(mediaType: String? = MediaType.ociIndex, manifests: [Descriptor], annotations: [String: String]? = nil) {
        schemaVersion = 2
        self.mediaType = mediaType
        self.manifests = manifests
        self.annotations = annotations
    }
}

/// JSON helpers that give byte-identical output for identical values (sorted keys, no
/// escaped slashes), which reproducible conversion relies on.
public enum CanonicalJSON {
    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw OCIError.malformedJSON(what: what, reason: "\(error)")
        }
    }
}
