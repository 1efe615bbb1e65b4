public import Blob
public import Daemon
public import PeerSharing
import FerrySystem
import Foundation
public import OCI
public import Registry

/// How ferryd turns a reference into a registered image: the manifest is resolved for this
/// machine's platform, the bootstrap is fetched once (verified, published by rename) and kept
/// under the state directory; blobs are read lazily from where the image lives.
///
/// Registry work is async (the client runs libcurl off the cooperative pool); local file work
/// (parsing the bootstrap, cutting its EROFS part out, reading an OCI layout) runs on a
/// dedicated thread, so a large image never holds up the tasks that serve kernel reads.
public struct ImageResolution: Sendable {
    public let client: RegistryClient
    public let peers: PeerNetwork?

    public init(client: RegistryClient, peers: PeerNetwork? = nil) {
        self.client = client
        self.peers = peers
    }

    /// The registered image for `reference` (`docker://…` or `oci:DIR[:TAG]`).
    public func resolve(_ reference: String, stateDirectory: String) async throws -> RegisteredImage {
        let parsed = try ImageReference(parsing: reference)
        switch parsed {
        case let .registry(ref):
            let resolved = try await client.resolveManifest(ref)
            let bootstrap = try Self.bootstrapLayer(of: resolved.manifest, reference: reference)
            let (bootstrapFile, temporary) = try Self.bootstrapPaths(stateDirectory, id: resolved.digest.hex)
            if let temporary {
                do {
                    // Verified (size and digest) by the client before it returns.
                    try await client.fetchBlob(ref, digest: bootstrap.digest, to: temporary, expectedSize: bootstrap.size)
                    try await DedicatedThread.run { try Self.publish(temporary, as: bootstrapFile) }
                } catch {
                    unlink(temporary)
                    throw error
                }
            }
            let registry = RegistryChunkSource(source: RegistryBlobSource(client: client, repository: ref))
            let peers = self.peers
            return try await DedicatedThread.run {
                let (metadata, erofs) = try Self.prepare(bootstrapFile, manifest: resolved.manifest, reference: reference)
                let sources: [any ChunkSource]
                if let peers {
                    // Peers may ask this node for the image's chunks (by digest only); it fetches them
                    // with its own credentials. Its own reads ask the chunks' home peers first.
                    peers.register(metadata, source: registry)
                    sources = [peers.source(fallback: registry), registry]
                } else {
                    sources = [registry]
                }
                return RegisteredImage(id: resolved.digest.hex, reference: reference, bootstrapPath: erofs, metadata: metadata,
                                       sources: sources, bootstrapDigest: bootstrap.digest.hex)
            }
        case let .ociLayout(path, tag):
            return try await DedicatedThread.run {
                let source = try OCILayoutSource(directory: path, tag: tag)
                let resolved = try source.resolve(platform: nil)
                let bootstrap = try Self.bootstrapLayer(of: resolved.manifest, reference: reference)
                let (bootstrapFile, temporary) = try Self.bootstrapPaths(stateDirectory, id: resolved.manifestDigest.hex)
                if let temporary {
                    do {
                        // Verified while copied (the layout source checks size and digest at the end).
                        let input = try source.openBlob(bootstrap)
                        let out = try FileDescriptor.open(temporary, .createTruncate, permissions: 0o600)
                        do {
                            while let piece = try input.read(upTo: 1 << 20), !piece.isEmpty { try out.write(piece) }
                            try out.close()
                        } catch {
                            try? out.close()
                            throw error
                        }
                        try Self.publish(temporary, as: bootstrapFile)
                    } catch {
                        unlink(temporary)
                        throw error
                    }
                }
                let (metadata, erofs) = try Self.prepare(bootstrapFile, manifest: resolved.manifest, reference: reference)
                let files = FileChunkSource(name: "layout") { blob in "\(path)/blobs/sha256/\(blob.hexDigest)" }
                return RegisteredImage(id: resolved.manifestDigest.hex, reference: reference, bootstrapPath: erofs,
                                       metadata: metadata, sources: [files], bootstrapDigest: bootstrap.digest.hex)
            }
        case .dockerArchive:
            throw DaemonError.configuration("\(reference): docker-archive images are not Ferry images; convert them first (ferry convert)")
        }
    }

    /// The manifest's bootstrap layer (the last one marked as such).
    static func bootstrapLayer(of manifest: Manifest, reference: String) throws -> Descriptor {
        guard let layer = manifest.layers.last(where: {
            MediaType.isFerryBootstrap($0)
        }) else {
            throw DaemonError.configuration("\(reference) is not a Ferry image (no bootstrap layer); convert it with ferry convert")
        }
        return layer
    }

    /// `<state>/images/<id>/bootstrap`, and, when it is not there yet, a temporary beside it to
    /// write it to (a name of its own per call: two resolutions of one image never share one).
    static func bootstrapPaths(_ stateDirectory: String, id: String) throws -> (file: String, temporary: String?) {
        let directory = "\(stateDirectory)/images/\(id)"
        let file = directory + "/bootstrap"
        if FileManager.default.fileExists(atPath: file) { return (file, nil) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return (file, "\(file).\(UUID().uuidString).tmp")
    }

    /// fsyncs a downloaded bootstrap and renames it into place (and fsyncs the directory).
    static func publish(_ temporary: String, as path: String) throws {
        let fd = try FileDescriptor.open(temporary, .readOnly)
        defer { try? fd.close() }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: temporary)
        try fd.sync()
        guard rename(temporary, path) == 0 else { throw SystemError.syscall("rename \(temporary)", errno: Errno.current) }
        try syncDirectory(containing: path)
    }

    /// Reads the bootstrap's chunk tables, checks that every blob they name is a layer of the
    /// verified manifest (a bootstrap may not point its image at blobs the manifest does not
    /// list), and cuts out the EROFS part the kernel mounts. Returns the metadata and that path.
    static func prepare(_ bootstrapFile: String, manifest: Manifest, reference: String) throws -> (BootstrapMetadata, String) {
        let (metadata, erofsLength) = try BootstrapMetadata.read(bootstrapAt: bootstrapFile)
        let layers = Set(manifest.layers.map(\.digest))
        for blob in metadata.blobs where !layers.contains(Digest(sha256: blob.digest)) {
            throw DaemonError.configuration(
                "\(reference): the bootstrap names blob sha256:\(blob.hexDigest), which is not a layer of the image's manifest")
        }
        let erofs = (bootstrapFile as NSString).deletingLastPathComponent + "/bootstrap.erofs"
        if !FileManager.default.fileExists(atPath: erofs) {
            let input = try FileDescriptor.open(bootstrapFile, .readOnly)
            defer { try? input.close() }
            try writeFileAtomically(try input.read(at: 0, count: Int(erofsLength)), to: erofs, permissions: 0o600)
        }
        return (metadata, erofs)
    }
}

/// Chunks from a registry (mirrors, then the origin), by ranged GETs of the blob.
struct RegistryChunkSource: ChunkSource {
    let source: RegistryBlobSource
    var name: String { "registry" }
    func read(blob: BlobInfo, range: Range<UInt64>) async throws -> [UInt8] {
        try await source.read(blob: Digest(sha256: blob.digest), range: range)
    }
}
