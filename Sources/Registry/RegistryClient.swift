import OCI
import FerrySystem
import Foundation
public import Logging
import Synchronization

/// A client for the OCI Distribution API (and Docker Registry v2) on libcurl.
///
/// One client can be shared by many tasks: curl handles (and with them live connections, DNS
/// entries and TLS sessions) are pooled, tokens are cached per host and scope. Every public
/// method runs its blocking transfers on a thread outside Swift's cooperative pool and honours
/// task cancellation (the transfer is aborted).
public final class RegistryClient: Sendable {
    public let options: RegistryOptions
    let pool: HandlePool
    let auth: Authenticator
    let redirects = RedirectCache()
    /// Set once a blob body read straight from the socket failed its digest: no more takeovers.
    let spliceRefused = Mutex(false)
    let splicedBodies = Atomic<Int>(0)

    /// Verified blob downloads whose body (some or all of it) went from the socket into the file
    /// inside the kernel (`RegistryOptions.spliceBlobBodies`) rather than through libcurl.
    public var blobBodiesSpliced: Int { splicedBodies.load(ordering: .relaxed) }
    let logger: Logger
    let proxyRoute: BlobProxyRoute?
    let observer: (any TransferObserver)?

    /// - Parameter observer: told about each blob pulled with `fetchBlob` or pushed with `pushBlob`.
    public init(options: RegistryOptions = RegistryOptions(), logger: Logger = Logger(label: "ferry.registry"),
                observer: (any TransferObserver)? = nil) {
        self.options = options
        pool = HandlePool()
        auth = Authenticator(options: options, pool: pool)
        self.logger = logger
        proxyRoute = options.blobProxy.map(BlobProxyRoute.init(options:))
        self.observer = observer
    }

    func report(_ direction: TransferEvent.Direction, _ ref: RegistryReference, _ digest: Digest, _ phase: TransferEvent.Phase) {
        observer?.observe(TransferEvent(direction: direction, repository: ref.repository, digest: digest, phase: phase))
    }

    /// What the blob proxy route did (nil without a proxy).
    public var blobProxyStatistics: BlobProxyStatistics? { proxyRoute?.statistics }

    /// Checks that `host` speaks the v2 API (`GET /v2/`), authenticating if it asks to.
    public func ping(host: String) async throws {
        try await offload { cancel in
            let target = RegistryTarget(registry: host, repository: "", object: "API root /v2/")
            let call = Call(target: target, host: host, scopes: [], method: "GET", url: self.options.baseURL(for: host),
                            policy: self.options.retry)
            let response = try self.send(call, cancel: cancel)
            try self.expect(response, [200], call)
        }
    }

    // MARK: Requests

    /// One logical request: where it goes, what it is about, how to retry it.
    struct Call {
        var target: RegistryTarget
        /// The host contacted (a mirror or the origin); auth state is kept per host.
        var host: String
        var scopes: [String]
        var method: String
        var url: String
        var headers: [String] = []
        var body: CurlUploadBody = .none
        var followRedirects = true
        var timeout: Duration?
        var policy: RetryPolicy
        /// False for uploads: then only failures to connect are retried here (the caller restarts).
        var idempotent = true
        /// False for pre-signed storage URLs, which must not get registry credentials.
        var authenticate = true
        /// The forward proxy this request goes through (blob range reads only); nil: direct.
        var proxy: String?
        /// Bytes of a file body sent so far.
        var uploadProgress: (@Sendable (UInt64) -> Void)?
        /// The body's length when known (`CurlRequestSpec.expectedBodyBytes`).
        var expectedBodyBytes: Int?
        /// Recycled buffers for a streamed body (`CurlRequestSpec.pieceBuffers`).
        var pieceBuffers: PieceBufferPool?
        /// Reads a long plain-HTTP body from the socket instead of through curl (`CurlBodyTakeover`).
        var bodyTakeover: CurlBodyTakeover?
    }

    /// Per-attempt setup: extra headers (e.g. a resume Range) and the body handler.
    typealias Prepare = () throws -> (headers: [String], body: CurlBodyHandler?)

    /// Sends `call`, answering one auth challenge and retrying transport failures, 5xx and 429
    /// per the call's policy. Returns whatever other status the registry answered.
    func send(_ call: Call, cancel: CancellationFlag, prepare: Prepare = { ([], nil) }) throws -> CurlResponse {
        var answeredChallenge = false
        return try withRetries(call.policy, cancel: cancel) { attempt in
            while true {
                var headers = call.headers
                if call.authenticate,
                   let authorization = try auth.authorization(host: call.host, scopes: call.scopes, target: call.target, cancel: cancel) {
                    headers.append("Authorization: " + authorization)
                }
                let (extra, handler) = try prepare()
                headers += extra
                var spec = options.requestSpec(method: call.method, url: call.url, headers: headers, body: call.body, timeout: call.timeout)
                spec.followRedirects = call.followRedirects
                if let proxy = call.proxy { spec.proxy = proxy }
                spec.uploadProgress = call.uploadProgress
                spec.expectedBodyBytes = call.expectedBodyBytes
                spec.pieceBuffers = call.pieceBuffers
                let response: CurlResponse
                do {
                    response = try pool.withHandle {
                        try $0.perform(spec, isCancelled: { cancel.isCancelled }, body: handler, takeover: call.bodyTakeover)
                    }
                } catch let failure as CurlFailure {
                    let error = RegistryError.unreachable(call.target, url: redactedURL(call.url), attempts: attempt + 1, reason: failure.message)
                    logger.debug("\(call.method) \(redactedURL(call.url)): \(failure.message)")
                    if failure.isRetryable && (call.idempotent || failure.isConnectFailure) { return .retry(error, retryAfterSeconds: nil) }
                    throw error
                }
                logger.trace("\(call.method) \(redactedURL(call.url)) -> \(response.status)")
                if response.status == 401 && call.authenticate && !answeredChallenge {
                    answeredChallenge = true
                    if auth.challenged(host: call.host, headers: response.headers, scopes: call.scopes) { continue }
                }
                if isRetryableStatus(response.status) && (call.idempotent || response.status == 429 || response.status == 503) {
                    let error = RegistryError.httpStatus(call.target, status: response.status, message: registryMessage(response.errorBody))
                    return .retry(error, retryAfterSeconds: retryAfterSeconds(response.headers))
                }
                return .done(response)
            }
        }
    }

    /// Throws the error that matches a status outside `accepted`.
    func expect(_ response: CurlResponse, _ accepted: Set<Int>, _ call: Call) throws {
        if accepted.contains(response.status) { return }
        let message = registryMessage(response.errorBody)
        switch response.status {
        case 404:
            throw RegistryError.notFound(call.target)
        case 401, 403:
            let reason = (message.isEmpty ? "" : message + "; ") + auth.explainRefusal(host: call.host)
            throw RegistryError.unauthorized(call.target, status: response.status, reason: reason)
        default:
            throw RegistryError.httpStatus(call.target, status: response.status, message: message)
        }
    }

    /// Runs a pull operation against each mirror of the reference's host in order, then the host.
    /// Mirrors get a single attempt each; the origin gets the full retry policy.
    func withPullSources<T>(_ ref: RegistryReference, object: String,
                            _ body: (_ host: String, _ policy: RetryPolicy) throws -> T) throws -> T {
        let mirrors = options.mirrors[ref.host] ?? []
        var errors: [RegistryError] = []
        for host in mirrors {
            do {
                return try body(host, RetryPolicy(maxAttempts: 1))
            } catch let error as RegistryError {
                let named = error.via(host)
                logger.debug("mirror failed: \(named); trying the next source")
                errors.append(named)
            }
        }
        do {
            return try body(ref.host, options.retry)
        } catch let error as RegistryError where !errors.isEmpty {
            throw RegistryError.allSourcesFailed(RegistryTarget(registry: ref.host, repository: ref.repository, object: object),
                                                 errors: errors + [error])
        }
    }

    func url(host: String, _ repository: String, _ suffix: String) -> String {
        options.baseURL(for: host) + repository + "/" + suffix
    }
}

/// The URL without its query (pre-signed storage URLs carry signatures there).
func redactedURL(_ url: String) -> String {
    guard let q = url.firstIndex(of: "?") else { return url }
    return String(url[..<q]) + "?…"
}

/// Where blob GETs were redirected (storage backends), reused for later range reads until
/// the entry expires or a read through it fails.
final class RedirectCache: Sendable {
    private let entries = Mutex<[String: (url: String, expires: ContinuousClock.Instant)]>([:])

    func lookup(_ key: String) -> String? {
        entries.withLock { table in
            guard let entry = table[key] else { return nil }
            if ContinuousClock.now >= entry.expires { table[key] = nil; return nil }
            return entry.url
        }
    }

    func store(_ key: String, url: String, lifetime: Duration) {
        guard lifetime > .zero else { return }
        entries.withLock { $0[key] = (url, ContinuousClock.now + lifetime) }
    }

    func remove(_ key: String) { entries.withLock { _ = $0.removeValue(forKey: key) } }
}
