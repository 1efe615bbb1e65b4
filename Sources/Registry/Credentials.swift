public import Foundation

/// A user name and secret for one registry. Its description never shows the secret.
public struct RegistryCredentials: Sendable, Hashable, CustomStringConvertible {
    public var username: String
    public var password: String
    /// An OAuth2 refresh token (`identitytoken` in Docker's config), used instead of the password.
    public var identityToken: String?

    public init(username: String, password: String, identityToken: String? = nil) {
        self.username = username
        self.password = password
        self.identityToken = identityToken
    }

    public var description: String { "credentials for \(username.isEmpty ? "<token>" : username) (secret hidden)" }

    /// The `Authorization: Basic …` value.
    var basicAuthorization: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }
}

/// Reads registry credentials from the files Docker, Podman and skopeo use, in their order:
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json`
/// (only the `auths` map; credential helpers are not run). An explicit file replaces the search.
public struct CredentialStore: Sendable {
    /// The files searched, first match wins.
    public let searchPaths: [String]

    public init(authFile: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let authFile {
            searchPaths = [authFile]
            return
        }
        var paths: [String] = []
        if let file = environment["REGISTRY_AUTH_FILE"], !file.isEmpty { paths.append(file) }
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { paths.append(runtime + "/containers/auth.json") }
        if let home = environment["HOME"], !home.isEmpty {
            let dockerConfig = environment["DOCKER_CONFIG"].map { $0 + "/config.json" } ?? home + "/.docker/config.json"
            paths.append(dockerConfig)
        }
        searchPaths = paths
    }

    /// Credentials for `host` (`host[:port]`, `docker.io` for Docker Hub), or nil when no file has any.
    public func credentials(for host: String) throws -> RegistryCredentials? {
        let wanted = Self.normalizedHost(host)
        for path in searchPaths {
            guard FileManager.default.fileExists(atPath: path) else { continue }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw RegistryError.credentialsFile(path: path, reason: "cannot read it")
            }
            let file: AuthFile
            do {
                file = try JSONDecoder().decode(AuthFile.self, from: data)
            } catch {
                throw RegistryError.credentialsFile(path: path, reason: "not valid JSON with an \"auths\" object")
            }
            for (key, entry) in file.auths ?? [:] where Self.normalizedHost(key) == wanted {
                return try entry.credentials(path: path, key: key)
            }
        }
        return nil
    }

    /// "https://index.docker.io/v1/" → "docker.io"; "http://host:5000/path" → "host:5000".
    static func normalizedHost(_ key: String) -> String {
        var text = Substring(key)
        for scheme in ["https://", "http://"] where text.hasPrefix(scheme) { text = text.dropFirst(scheme.count) }
        if let slash = text.firstIndex(of: "/") { text = text[..<slash] }
        let host = String(text).lowercased()
        switch host {
        case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com": return "docker.io"
        default: return host
        }
    }
}

/// The shape shared by `~/.docker/config.json` and containers' `auth.json`.
private struct AuthFile: Decodable {
    var auths: [String: AuthEntry]?
}

private struct AuthEntry: Decodable {
    var auth: String?
    var username: String?
    var password: String?
    var identitytoken: String?

    func credentials(path: String, key: String) throws -> RegistryCredentials? {
        if let auth, !auth.isEmpty {
            guard let decoded = Data(base64Encoded: auth, options: .ignoreUnknownCharacters),
                  let text = String(data: decoded, encoding: .utf8),
                  let colon = text.firstIndex(of: ":") else {
                throw RegistryError.credentialsFile(path: path, reason: "entry \"\(key)\": \"auth\" is not base64 of user:password")
            }
            return RegistryCredentials(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]),
                                       identityToken: identitytoken)
        }
        if let username, let password { return RegistryCredentials(username: username, password: password, identityToken: identitytoken) }
        if let identitytoken { return RegistryCredentials(username: "", password: "", identityToken: identitytoken) }
        return nil
    }
}
