import FerrySystem

/// How a layer blob is compressed.
public enum LayerCompression: Sendable, Hashable {
    case none
    case gzip
    case zstd

    /// The compression a layer media type declares; `unsupportedMediaType` for anything that is
    /// not a tar layer (including Ferry's own blobs and foreign encryption schemes).
    public init(mediaType: String, what: String) throws {
        switch mediaType {
        case MediaType.ociLayerTar, MediaType.dockerLayerTar, MediaType.ociNondistributableLayerTar:
            self = .none
        case MediaType.ociLayerGzip, MediaType.dockerLayerGzip, MediaType.dockerForeignLayerGzip,
             MediaType.ociNondistributableLayerGzip:
            self = .gzip
        case MediaType.ociLayerZstd, MediaType.ociNondistributableLayerZstd, MediaType.dockerLayerZstd:
            self = .zstd
        default:
            throw OCIError.unsupportedMediaType(what: what, mediaType: mediaType)
        }
    }

    /// Guesses from the first bytes of a blob: gzip's `1f 8b` (RFC 1952 §2.3.1), zstd's frame
    /// magic `28 b5 2f fd` (RFC 8878 §3.1.1), else plain tar. Docker archives store gzip layers
    /// as `layer.tar` without saying so.
    public init(sniffing prefix: ArraySlice<UInt8>) {
        let p = Array(prefix.prefix(4))
        if p.count >= 2, p[0] == 0x1f, p[1] == 0x8b {
            self = .gzip
        } else if p.count >= 4, p == [0x28, 0xb5, 0x2f, 0xfd] {
            self = .zstd
        } else {
            self = .none
        }
    }

    /// The OCI layer media type for this compression.
    public var ociMediaType: String {
        switch self {
        case .none: return MediaType.ociLayerTar
        case .gzip: return MediaType.ociLayerGzip
        case .zstd: return MediaType.ociLayerZstd
        }
    }
}

/// The uncompressed tar stream of a layer, from its (possibly compressed) blob.
///
/// Decompression errors and truncated compressed streams become `OCIError.badCompression`
/// naming the layer.
public final class DecompressingSource: ByteSource {
    private let source: any ByteSource
    private let decompressor: (any StreamDecompressor)?
    private let layer: String
    private var output = [UInt8]()
    private var outputPosition = 0
    private var finished = false

    /// Decompresses `source` as `compression` says.
    public init(_ source: any ByteSource, compression: LayerCompression, layer: String) throws {
        self.source = source
        self.layer = layer
        do {
            switch compression {
            case .none: decompressor = nil
            case .gzip: decompressor = try GzipDecompressor()
            case .zstd: decompressor = try ZstdDecompressor()
            }
        } catch {
            throw OCIError.badCompression(layer: layer, reason: "\(error)")
        }
    }

    /// Decompresses `source` as its media type says.
    public convenience init(_ source: any ByteSource, mediaType: String, layer: String) throws {
        try self.init(source, compression: try LayerCompression(mediaType: mediaType, what: "layer \(layer)"), layer: layer)
    }

    public func read(upTo count: Int) throws -> ArraySlice<UInt8>? {
        guard let decompressor else { return try source.read(upTo: count) }
        while outputPosition == output.count {
            guard !finished else { return nil }
            output.removeAll(keepingCapacity: true)
            outputPosition = 0
            // Small inputs bound the output of one call (gzip expands at most ~1032:1).
            if let input = try source.read(upTo: 64 << 10) {
                do { try decompressor.decompress(input, into: &output) } catch {
                    throw OCIError.badCompression(layer: layer, reason: "\(error)")
                }
            } else {
                finished = true
                do { try decompressor.finish() } catch {
                    throw OCIError.badCompression(layer: layer, reason: "\(error)")
                }
            }
        }
        let end = min(output.count, outputPosition + count)
        defer { outputPosition = end }
        return output[outputPosition..<end]
    }
}
