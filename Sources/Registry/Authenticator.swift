import Foundation
import Synchronization

/// Answers registry auth challenges: Basic with stored credentials, or Bearer tokens from the
/// registry's token service, cached per host and scope set and renewed before they expire.
final class Authenticator: Sendable {
    private let options: RegistryOptions
    private let pool: HandlePool
    let store: CredentialStore
    /// The last challenge each host sent; later requests to it authenticate up front.
    private let challenges = Mutex<[String: AuthChallenge]>([:])
    private let tokens = Mutex<[String: CachedToken]>([:])

    private struct CachedToken {
        var token: String
        var renewAt: ContinuousClock.Instant
    }

    init(options: RegistryOptions, pool: HandlePool) {
        self.options = options
        self.pool = pool
        store = CredentialStore(authFile: options.authFile)
    }

    /// Scope for a repository: `repository:NAME:pull` or `…:pull,push` (distribution token spec).
    static func scope(repository: String, push: Bool) -> String { "repository:\(repository):" + (push ? "pull,push" : "pull") }

    /// The `Authorization` header value for a request to `host` needing `scopes`, fetching a
    /// token if needed; nil when the host has not asked for authentication.
    func authorization(host: String, scopes: [String], target: RegistryTarget, cancel: CancellationFlag) throws -> String? {
        guard let challenge = challenges.withLock({ $0[host] }) else { return nil }
        switch challenge.scheme {
        case "basic":
            return try store.credentials(for: host)?.basicAuthorization
        case "bearer":
            let key = host + " " + scopes.sorted().joined(separator: " ")
            let now = ContinuousClock.now
            if let cached = tokens.withLock({ $0[key] }), now < cached.renewAt { return "Bearer " + cached.token }
            let (token, lifetime) = try fetchToken(challenge: challenge, host: host, scopes: scopes, target: target, cancel: cancel)
            // Renew a little before expiry: a quarter of the lifetime, at most 30 s, early.
            let margin = min(.seconds(30), lifetime / 4)
            tokens.withLock { $0[key] = CachedToken(token: token, renewAt: now + lifetime - margin) }
            return "Bearer " + token
        default:
            return nil
        }
    }

    /// Records a 401's challenge and forgets tokens for `host` that the registry no longer accepts.
    /// Returns false when the challenge is of a scheme we cannot answer.
    func challenged(host: String, headers: HTTPHeaders, scopes: [String]) -> Bool {
        let parsed = headers.values("www-authenticate").flatMap(AuthChallenge.parse)
        guard let usable = parsed.first(where: { $0.scheme == "bearer" }) ?? parsed.first(where: { $0.scheme == "basic" }) else {
            return false
        }
        challenges.withLock { $0[host] = usable }
        let key = host + " " + scopes.sorted().joined(separator: " ")
        tokens.withLock { _ = $0.removeValue(forKey: key) }
        return true
    }

    /// Why a 401 could not be answered, without revealing any secret.
    func explainRefusal(host: String) -> String {
        let credentials = (try? store.credentials(for: host)) ?? nil
        if let credentials { return "the registry refused \(credentials)" }
        return "no credentials for \(host) in " + (store.searchPaths.isEmpty ? "any auth file" : store.searchPaths.joined(separator: ", "))
    }

    private func fetchToken(challenge: AuthChallenge, host: String, scopes: [String], target: RegistryTarget,
                            cancel: CancellationFlag) throws -> (String, Duration) {
        guard let realm = challenge.parameters["realm"], !realm.isEmpty else {
            throw RegistryError.unauthorized(target, status: 401, reason: "Bearer challenge without a realm")
        }
        try checkRealm(realm, registry: host, target: target)
        let service = challenge.parameters["service"]
        let credentials = try store.credentials(for: host)
        let usePost: Bool
        switch options.tokenFetch {
        case .get: usePost = false
        case .post: usePost = true
        case .automatic: usePost = credentials != nil
        }
        if usePost {
            let response = try tokenRequest(post: true, realm: realm, service: service, scopes: scopes,
                                            credentials: credentials, cancel: cancel)
            // Token services without the OAuth2 form answer 404/405 (or 400): fall back to GET.
            if options.tokenFetch == .automatic && [400, 404, 405].contains(response.status) {
                return try parseToken(try tokenRequest(post: false, realm: realm, service: service, scopes: scopes,
                                                       credentials: credentials, cancel: cancel), realm: realm, host: host, target: target)
            }
            return try parseToken(response, realm: realm, host: host, target: target)
        }
        return try parseToken(try tokenRequest(post: false, realm: realm, service: service, scopes: scopes,
                                               credentials: credentials, cancel: cancel), realm: realm, host: host, target: target)
    }

    /// Credentials go to a token realm only over TLS: an `http` realm is accepted only when its
    /// host is marked plain-http, or it is on the same host name as the (plain-http) registry
    /// that names it (a local registry with its token service on another port). A registry
    /// cannot send them in clear text to a host of its choosing.
    private func checkRealm(_ realm: String, registry host: String, target: RegistryTarget) throws {
        guard let url = URLComponents(string: realm), let scheme = url.scheme?.lowercased(), let realmHost = url.host, !realmHost.isEmpty else {
            throw RegistryError.unauthorized(target, status: 401, reason: "the registry's token realm \"\(realm)\" is not a URL")
        }
        if scheme == "https" { return }
        let registryName = URLComponents(string: "http://" + host)?.host
        guard scheme == "http",
              options.plainHTTPHosts.contains(Self.hostOf(realm)) || (options.plainHTTPHosts.contains(host) && registryName == realmHost) else {
            throw RegistryError.unauthorized(target, status: 401, reason: """
                the registry's token realm \(realm) is not https; credentials are sent there only over TLS \
                (mark \(Self.hostOf(realm)) plain-http to allow it)
                """)
        }
    }

    private struct TokenResponse {
        var status: Int
        var body: [UInt8]
    }

    private func tokenRequest(post: Bool, realm: String, service: String?, scopes: [String],
                              credentials: RegistryCredentials?, cancel: CancellationFlag) throws -> TokenResponse {
        var spec: CurlRequestSpec
        if post {
            var form: [(String, String)] = [("client_id", "ferry")]
            if let token = credentials?.identityToken {
                form += [("grant_type", "refresh_token"), ("refresh_token", token)]
            } else if let credentials {
                form += [("grant_type", "password"), ("username", credentials.username), ("password", credentials.password)]
            }
            if let service { form.append(("service", service)) }
            if !scopes.isEmpty { form.append(("scope", scopes.joined(separator: " "))) }
            let body = form.map { "\(formEncoded($0.0))=\(formEncoded($0.1))" }.joined(separator: "&")
            spec = options.requestSpec(method: "POST", url: realm,
                                       headers: ["Content-Type: application/x-www-form-urlencoded", "Accept: application/json"],
                                       body: .bytes(Array(body.utf8)))
        } else {
            var url = realm
            if let service { url = appendingQuery(url, "service", service) }
            for scope in scopes { url = appendingQuery(url, "scope", scope) }
            var headers = ["Accept: application/json"]
            if let credentials, credentials.identityToken == nil { headers.append("Authorization: " + credentials.basicAuthorization) }
            spec = options.requestSpec(method: "GET", url: url, headers: headers)
        }
        spec.totalTimeoutMs = 60_000
        // A redirect would re-send the form (with the password) or the Basic header to wherever
        // the token service points: token requests go to the realm and nowhere else.
        spec.followRedirects = false
        let target = RegistryTarget(registry: Self.hostOf(realm), repository: "", object: "token service")
        return try withRetries(options.retry, cancel: cancel) { attempt in
            var collected: [UInt8] = []
            let response: CurlResponse
            do {
                response = try pool.withHandle { handle in
                    try handle.perform(spec, isCancelled: { cancel.isCancelled }) { _, _, chunk in
                        collected += chunk
                        return collected.count < 1 << 20
                    }
                }
            } catch let failure as CurlFailure {
                let error = RegistryError.tokenService(realm: realm, status: nil, reason: failure.message)
                _ = target
                return failure.isRetryable ? .retry(error, retryAfterSeconds: nil) : .done(TokenResponse(status: -1, body: Array(failure.message.utf8)))
            }
            if isRetryableStatus(response.status) {
                return .retry(.tokenService(realm: realm, status: response.status, reason: registryMessage(response.errorBody)),
                              retryAfterSeconds: retryAfterSeconds(response.headers))
            }
            return .done(TokenResponse(status: response.status, body: (200..<300).contains(response.status) ? collected : response.errorBody))
        }
    }

    private func parseToken(_ response: TokenResponse, realm: String, host: String, target: RegistryTarget) throws -> (String, Duration) {
        if response.status == -1 {
            throw RegistryError.tokenService(realm: realm, status: nil, reason: String(decoding: response.body, as: UTF8.self))
        }
        if response.status == 401 || response.status == 403 {
            throw RegistryError.unauthorized(target, status: response.status, reason: "token service \(realm) refused: " + explainRefusal(host: host))
        }
        guard (200..<300).contains(response.status) else {
            throw RegistryError.tokenService(realm: realm, status: response.status, reason: registryMessage(response.body))
        }
        struct Body: Decodable {
            var token: String?
            var access_token: String?
            var expires_in: Int?
        }
        guard let body = try? JSONDecoder().decode(Body.self, from: Data(response.body)),
              let token = body.token ?? body.access_token, !token.isEmpty else {
            throw RegistryError.tokenService(realm: realm, status: response.status, reason: "answer has no token")
        }
        // The token spec: a missing expires_in means 60 seconds.
        let seconds = body.expires_in.flatMap { $0 > 0 ? $0 : nil } ?? 60
        return (token, .seconds(seconds))
    }

    static func hostOf(_ url: String) -> String { RegistryOptions.authority(of: url) }
}

/// The registry's error text from a distribution error body (`{"errors":[{"code","message"}]}`),
/// or the first line of a plain body.
func registryMessage(_ body: [UInt8]) -> String {
    struct Errors: Decodable {
        struct Entry: Decodable { var code: String?; var message: String? }
        var errors: [Entry]?
        var error: String?
        var details: String?
    }
    if let parsed = try? JSONDecoder().decode(Errors.self, from: Data(body)) {
        if let entries = parsed.errors, !entries.isEmpty {
            return entries.map { [$0.code, $0.message].compactMap { $0 }.joined(separator: ": ") }.joined(separator: "; ")
        }
        if let error = parsed.error { return error + (parsed.details.map { ": \($0)" } ?? "") }
    }
    let text = String(decoding: body.prefix(300), as: UTF8.self)
    return text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
}
