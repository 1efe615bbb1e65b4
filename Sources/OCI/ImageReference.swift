/// Where an image lives, named with the containers-image transport syntax that skopeo users know.
public enum ImageReference: Sendable, Hashable, CustomStringConvertible {
    /// `oci:DIR[:TAG]` — an OCI image layout directory, optionally one tagged image in it.
    case ociLayout(path: String, tag: String?)
    /// `docker-archive:FILE.tar` — a `docker save` tarball.
    case dockerArchive(path: String)
    /// `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` — an image in a registry.
    case registry(RegistryReference)

    /// Parses a transport-qualified reference.
    public init(parsing text: String) throws {
        if text.hasPrefix("oci:") {
            let rest = String(text.dropFirst(4))
            guard !rest.isEmpty else { throw OCIError.malformedReference(text, reason: "no directory after oci:") }
            // The tag follows the last ':' unless that ':' is part of the path (a '/' after it).
            if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
                let tag = String(rest[rest.index(after: colon)...])
                let path = String(rest[..<colon])
                guard !path.isEmpty else { throw OCIError.malformedReference(text, reason: "no directory after oci:") }
                self = .ociLayout(path: path, tag: tag.isEmpty ? nil : tag)
            } else {
                self = .ociLayout(path: rest, tag: nil)
            }
        } else if text.hasPrefix("docker-archive:") {
            let path = String(text.dropFirst("docker-archive:".count))
            guard !path.isEmpty else { throw OCIError.malformedReference(text, reason: "no file after docker-archive:") }
            self = .dockerArchive(path: path)
        } else if text.hasPrefix("docker://") {
            self = .registry(try RegistryReference(parsing: String(text.dropFirst("docker://".count))))
        } else {
            throw OCIError.malformedReference(text, reason: "expected oci:DIR[:TAG], docker-archive:FILE or docker://HOST/REPO[:TAG]")
        }
    }

    public var description: String {
        switch self {
        case let .ociLayout(path, tag): return "oci:\(path)" + (tag.map { ":\($0)" } ?? "")
        case let .dockerArchive(path): return "docker-archive:\(path)"
        case let .registry(ref): return "docker://\(ref)"
        }
    }
}

/// `HOST[:PORT]/REPO[:TAG|@DIGEST]` with Docker Hub defaults: no host means `docker.io`, and a
/// single-component repository on Docker Hub gets `library/`. No tag and no digest means `latest`.
public struct RegistryReference: Sendable, Hashable, CustomStringConvertible {
    /// Registry host with optional port, e.g. `127.0.0.1:5000`; `docker.io` for Docker Hub.
    public var host: String
    /// Repository path, e.g. `library/debian`.
    public var repository: String
    /// Tag, when the reference names one.
    public var tag: String?
    /// Digest, when the reference names one (it wins over the tag).
    public var digest: Digest?

    public init(host: String, repository: String, tag: String? = nil, digest: Digest? = nil) {
        self.host = host
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// Parses the part after `docker://`.
    public init(parsing text: String) throws {
        var rest = Substring(text)
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            digest = try Digest(parsing: String(rest[rest.index(after: at)...]))
            rest = rest[..<at]
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
            guard let t = tag, !t.isEmpty, t.count <= 128,
                  t.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }) else {
                throw OCIError.malformedReference(text, reason: "invalid tag")
            }
        }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty }) else {
            throw OCIError.malformedReference(text, reason: "empty repository name")
        }
        var host = "docker.io"
        var repoParts = parts
        // The first component is a host when it has a '.' or ':' or is "localhost" (as Docker decides).
        if parts.count > 1, parts[0].contains(".") || parts[0].contains(":") || parts[0] == "localhost" {
            host = parts[0]
            repoParts = Array(parts.dropFirst())
        }
        if host == "index.docker.io" { host = "docker.io" }
        if host == "docker.io" && repoParts.count == 1 { repoParts.insert("library", at: 0) }
        let repository = repoParts.joined(separator: "/")
        guard repository.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || "._-/".contains($0)) }) else {
            throw OCIError.malformedReference(text, reason: "repository names use lower-case letters, digits and . _ - /")
        }
        self.init(host: host, repository: repository, tag: digest == nil ? (tag ?? "latest") : tag, digest: digest)
    }

    /// What to ask the registry for: the digest if known, else the tag.
    public var manifestReference: String { digest?.description ?? tag ?? "latest" }

    public var description: String {
        var s = "\(host)/\(repository)"
        if let tag { s += ":\(tag)" }
        if let digest { s += "@\(digest)" }
        return s
    }
}

extension ImageReference {
    /// Opens an image stored on this machine (`oci:` and `docker-archive:`); nil for a registry
    /// reference, which the Registry module opens.
    public func openLocalSource() throws -> (any ImageSource)? {
        switch self {
        case let .ociLayout(path, tag): return try OCILayoutSource(directory: path, tag: tag)
        case let .dockerArchive(path): return try DockerArchiveSource(path: path)
        case .registry: return nil
        }
    }
}
