import FerrySystem

/// A `docker save` tarball (also written by `skopeo copy … docker-archive:FILE`).
///
/// `manifest.json` lists, per image, the config file, its tags and the layer files, either in
/// the legacy layout (`<id>/layer.tar`, `<hex>.json`) or the one Docker 25 writes
/// (`blobs/sha256/<hex>`, often with the legacy names as symbolic links to them). The archive
/// is scanned once for member offsets; members are then read in place, never extracted. The
/// manifest Ferry returns is synthesized: an OCI manifest whose layer descriptors carry the
/// sha256 and size of each layer file and a media type from its magic bytes (docker archives
/// hold gzip layers under `.tar` names).
public final class DockerArchiveSource: ImageSource {
    public let path: String
    public let tag: String?
    /// The synthesized OCI manifest and its canonical JSON bytes.
    public let manifest: Manifest
    public let manifestBytes: [UInt8]
    /// Where each blob (config, layers) lies in the archive.
    private var blobs: [Digest: Member] = [:]

    public var name: String { "docker-archive:\(path)" + (tag.map { ":\($0)" } ?? "") }

    /// A regular file inside the archive.
    struct Member {
        var offset: Int64
        var size: Int64
    }

    /// One image in manifest.json.
    struct Entry: Decodable {
        var config: String
        var repoTags: [String]?
        var layers: [String]

        enum CodingKeys: String, CodingKey {
            case config = "Config"
            case repoTags = "RepoTags"
            case layers = "Layers"
        }
    }

    /// Scans the archive, picks the image (by `tag` — "name:tag" or just "tag" — or the only
    /// one), and hashes its config and layers.
    public init(path: String, tag: String? = nil) throws {
        self.path = path
        self.tag = tag
        let label = "docker-archive:\(path)"
        let members = try Self.scan(path: path, label: label)

        func member(_ name: String) throws -> Member {
            guard let m = members.lookup(name) else {
                throw OCIError.malformedImageStore(source: label, reason: "manifest.json names \"\(name)\", which is not a file in the archive")
            }
            return m
        }
        func bytes(of m: Member, limit: Int, what: String) throws -> [UInt8] {
            guard m.size <= Int64(limit) else { throw OCIError.tooLarge(what: what, limit: Int64(limit)) }
            return try FileSource(path: path, offset: UInt64(m.offset), length: UInt64(m.size)).readAll(limit: limit, what: what)
        }

        let manifestJSON = try bytes(of: try member("manifest.json"), limit: manifestSizeLimit, what: "\(label) manifest.json")
        let entries = try CanonicalJSON.decode([Entry].self, from: manifestJSON, what: "\(label) manifest.json")
        let allTags = entries.flatMap { $0.repoTags ?? [] }
        let entry: Entry
        if let tag {
            guard let match = entries.first(where: { ($0.repoTags ?? []).contains { Self.tag($0, matches: tag) } }) else {
                throw OCIError.tagNotFound(tag: tag, source: label, available: allTags)
            }
            entry = match
        } else {
            guard entries.count == 1, let only = entries.first else {
                if entries.isEmpty { throw OCIError.malformedImageStore(source: label, reason: "manifest.json lists no images") }
                throw OCIError.ambiguousImage(source: label, available: allTags)
            }
            entry = only
        }

        // Config: its digest is the sha256 of the file; the file name says what it must be.
        let configMember = try member(entry.config)
        let configBytes = try bytes(of: configMember, limit: configSizeLimit, what: "\(label) config \(entry.config)")
        let configDigest = Digest(sha256: SHA256.hash(configBytes))
        if let named = Self.digestInName(entry.config), named != configDigest {
            throw OCIError.digestMismatch(what: "\(label) config \(entry.config)", expected: named, actual: configDigest)
        }
        blobs[configDigest] = configMember
        let config = Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: configMember.size)
        let diffIDs = (try? CanonicalJSON.decode(ImageConfiguration.self, from: configBytes, what: "config"))?.rootfs?.diffIDs

        var layers: [Descriptor] = []
        for (i, layerName) in entry.layers.enumerated() {
            let m = try member(layerName)
            let what = "\(label) layer \(layerName)"
            let file = try FileSource(path: path, offset: UInt64(m.offset), length: UInt64(m.size))
            let hasher = SHA256()
            var compression: LayerCompression?
            while let piece = try file.read(upTo: 1 << 20) {
                if compression == nil { compression = LayerCompression(sniffing: piece) }
                hasher.update(piece)
            }
            let digest = Digest(sha256: hasher.finalize())
            if let named = Self.digestInName(layerName), named != digest {
                throw OCIError.digestMismatch(what: what, expected: named, actual: digest)
            }
            let kind = compression ?? .none
            // An uncompressed layer's digest is its diff ID; a mismatch means a damaged archive.
            if kind == .none, let diffIDs, i < diffIDs.count, diffIDs[i] != digest {
                throw OCIError.digestMismatch(what: "\(what) (diff_id \(i) of the config)", expected: diffIDs[i], actual: digest)
            }
            blobs[digest] = m
            layers.append(Descriptor(mediaType: kind.ociMediaType, digest: digest, size: m.size))
        }
        manifest = Manifest(config: config, layers: layers)
        manifestBytes = try CanonicalJSON.encode(manifest)
    }

    public func rootDescriptor() throws -> Descriptor {
        Descriptor(mediaType: MediaType.ociManifest, digest: Digest(sha256: SHA256.hash(manifestBytes)), size: Int64(manifestBytes.count))
    }

    public func readManifest(_ descriptor: Descriptor) throws -> [UInt8] {
        guard descriptor == (try rootDescriptor()) else { throw OCIError.notFound(what: "manifest \(descriptor.digest) in \(name)") }
        return manifestBytes
    }

    public func openBlob(_ descriptor: Descriptor) throws -> any ByteSource {
        let what = "blob \(descriptor.digest) in \(name)"
        guard let m = blobs[descriptor.digest] else { throw OCIError.notFound(what: what) }
        return try VerifyingSource(FileSource(path: path, offset: UInt64(m.offset), length: UInt64(m.size)), expecting: descriptor, what: what)
    }

    /// Whether a RepoTags entry is what the user asked for: the same text, the same tag alone
    /// ("v1" for "repo:v1"), or the same reference once Docker Hub defaults are applied
    /// ("ferry/test:v1" for "docker.io/ferry/test:v1").
    static func tag(_ repoTag: String, matches wanted: String) -> Bool {
        if repoTag == wanted || repoTag.hasSuffix(":" + wanted) { return true }
        guard let a = try? RegistryReference(parsing: repoTag), let b = try? RegistryReference(parsing: wanted) else { return false }
        return a == b
    }

    /// "blobs/sha256/<hex>", "<hex>.json" and "<hex>.tar" name the file's digest ("<id>/layer.tar"
    /// does not: the id is a v1 image id).
    static func digestInName(_ name: String) -> Digest? {
        let parts = name.split(separator: "/").map(String.init)
        if parts.count == 3, parts[0] == "blobs", let d = try? Digest(parsing: "\(parts[1]):\(parts[2])") { return d }
        for suffix in [".json", ".tar"] where parts.count == 1 && parts[0].hasSuffix(suffix) {
            if let d = try? Digest(parsing: "sha256:" + parts[0].dropLast(suffix.count)) { return d }
        }
        return nil
    }

    /// Member offsets, symbolic and hard links of the outer tar, by normalized path.
    struct Members {
        var files: [String: Member] = [:]
        var links: [String: String] = [:]

        /// Follows links (relative to the link's directory, a few hops at most).
        func lookup(_ name: String) -> Member? {
            var current = Self.normalize(name)
            for _ in 0..<16 {
                if let m = files[current] { return m }
                guard let target = links[current] else { return nil }
                current = target
            }
            return nil
        }

        static func normalize(_ path: String) -> String {
            var out: [Substring] = []
            for part in path.split(separator: "/") {
                if part == "." { continue }
                if part == ".." { _ = out.popLast(); continue }
                out.append(part)
            }
            return out.joined(separator: "/")
        }
    }

    private static func scan(path: String, label: String) throws -> Members {
        let head = try FileSource(path: path).read(upTo: 4).map(Array.init) ?? []
        if LayerCompression(sniffing: head[...]) != .none {
            throw OCIError.malformedImageStore(source: label, reason: "the archive is compressed; decompress it first (docker load accepts it, Ferry reads members in place)")
        }
        var members = Members()
        let reader = TarReader(source: try FileSource(path: path), layer: label)
        while let entry = try reader.next() {
            let name = entry.path.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
            switch entry.kind {
            case .regular:
                guard !reader.isSparse else {
                    throw OCIError.malformedImageStore(source: label, reason: "member \(name) is stored sparse; Ferry reads members in place (repack the archive without --sparse)")
                }
                members.files[name] = Member(offset: reader.dataOffset, size: entry.size)
            case .symlink:
                let target = String(decoding: entry.symlinkTarget ?? [], as: UTF8.self)
                let dir = entry.path.dropLast().map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
                members.links[name] = Members.normalize(target.hasPrefix("/") ? target : dir + "/" + target)
            case .hardlink:
                members.links[name] = (entry.hardlinkTarget ?? []).map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
            default:
                break
            }
        }
        return members
    }
}
