import Foundation
import FerrySystem

/// Writes an OCI image layout (image-spec image-layout.md): blobs under `blobs/sha256/`, then
/// `oci-layout` and `index.json` at `finish()`.
///
/// Everything it writes stays inside `directory` (temporary files included), so a caller can
/// build the layout in a temporary directory and rename it into place.
public final class OCILayoutWriter {
    public let directory: String
    private var entries: [Descriptor] = []
    private var temporaryCounter = 0

    /// Creates `directory` (and `blobs/sha256`) if needed.
    public init(directory: String) throws {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory + "/blobs/sha256", withIntermediateDirectories: true)
        } catch {
            throw OCIError.io(path: directory, reason: "cannot create the layout directory: \(error)")
        }
    }

    /// Path where a blob with `digest` lives.
    public func blobPath(_ digest: Digest) -> String { "\(directory)/blobs/\(digest.algorithm)/\(digest.hex)" }

    /// Stores `bytes` as a blob and returns its descriptor.
    @discardableResult
    public func addBlob(_ bytes: [UInt8], mediaType: String, annotations: [String: String]? = nil) throws -> Descriptor {
        let digest = Digest(sha256: SHA256.hash(bytes))
        let destination = blobPath(digest)
        if !FileManager.default.fileExists(atPath: destination) {
            let temporary = nextTemporaryPath()
            do {
                let file = try FileDescriptor.open(temporary, .createTruncate)
                do {
                    try file.write(bytes)
                    try file.close()
                } catch {
                    try? file.close()
                    throw error
                }
            } catch {
                try? FileManager.default.removeItem(atPath: temporary)
                throw OCIError.io(path: temporary, reason: "\(error)")
            }
            try place(temporary, at: destination)
        }
        return Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count), annotations: annotations)
    }

    /// Moves the file at `path` into the layout as a blob (a rename when both are on one file
    /// system). Pass `digest` when the caller computed it while writing the file; otherwise the
    /// file is read once to compute it.
    @discardableResult
    public func moveBlob(from path: String, mediaType: String, digest: Digest? = nil,
                         annotations: [String: String]? = nil) throws -> Descriptor {
        let size: Int64
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
        } catch {
            throw OCIError.io(path: path, reason: "cannot stat the blob to move: \(error)")
        }
        let blobDigest: Digest
        if let digest {
            blobDigest = digest
        } else {
            let source = try FileSource(path: path)
            let hasher = SHA256()
            while let piece = try source.read(upTo: 1 << 20) { hasher.update(piece) }
            blobDigest = Digest(sha256: hasher.finalize())
        }
        try place(path, at: blobPath(blobDigest))
        return Descriptor(mediaType: mediaType, digest: blobDigest, size: size, annotations: annotations)
    }

    /// Stores a manifest (canonical JSON) as a blob and lists it in index.json, tagged with
    /// `org.opencontainers.image.ref.name` when `tag` is given.
    @discardableResult
    public func addManifest(_ manifest: Manifest, tag: String? = nil, platform: Platform? = nil) throws -> Descriptor {
        var descriptor = try addBlob(try CanonicalJSON.encode(manifest), mediaType: manifest.mediaType ?? MediaType.ociManifest)
        descriptor.platform = platform
        addIndexEntry(descriptor, tag: tag)
        return descriptor
    }

    /// Lists an already stored manifest or index in index.json. A later entry with the same tag
    /// replaces an earlier one.
    public func addIndexEntry(_ descriptor: Descriptor, tag: String?) {
        var entry = descriptor
        if let tag {
            entries.removeAll { $0.annotations?[refNameAnnotation] == tag }
            entry.annotations = (entry.annotations ?? [:]).merging([refNameAnnotation: tag]) { _, new in new }
        }
        entries.append(entry)
    }

    /// Writes `oci-layout` and `index.json` (deterministic JSON, entries in the order added).
    public func finish() throws {
        try writeFile("oci-layout", CanonicalJSON.encode(LayoutFile(imageLayoutVersion: "1.0.0")))
        try writeFile("index.json", CanonicalJSON.encode(Index(manifests: entries)))
    }

    // MARK: - Files

    private func nextTemporaryPath() -> String {
        temporaryCounter += 1
        return "\(directory)/blobs/sha256/.tmp-\(temporaryCounter)"
    }

    /// Renames `source` to `destination`; if the blob is already there, drops `source`.
    private func place(_ source: String, at destination: String) throws {
        let manager = FileManager.default
        if manager.fileExists(atPath: destination) {
            try? manager.removeItem(atPath: source)
            return
        }
        do { try manager.moveItem(atPath: source, toPath: destination) } catch {
            throw OCIError.io(path: destination, reason: "cannot move \(source) into the layout: \(error)")
        }
    }

    private func writeFile(_ name: String, _ bytes: [UInt8]) throws {
        let temporary = nextTemporaryPath()
        do {
            let file = try FileDescriptor.open(temporary, .createTruncate)
            try file.write(bytes)
            try file.close()
        } catch {
            throw OCIError.io(path: temporary, reason: "\(error)")
        }
        let destination = "\(directory)/\(name)"
        do {
            if FileManager.default.fileExists(atPath: destination) { try FileManager.default.removeItem(atPath: destination) }
            try FileManager.default.moveItem(atPath: temporary, toPath: destination)
        } catch {
            throw OCIError.io(path: destination, reason: "\(error)")
        }
    }
}
