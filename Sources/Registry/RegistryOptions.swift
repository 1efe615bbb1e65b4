/// When and how often to retry a failed request.
///
/// Connection failures, timeouts, 5xx and 429 are retried; the delay before attempt n+1 is a
/// random value in [0, min(maxDelay, baseDelay·2ⁿ)] ("full jitter"), or the server's
/// `Retry-After` seconds when it sent one (capped at `maxRetryAfter`).
public struct RetryPolicy: Sendable, Hashable {
    /// Total tries per request, including the first.
    public var maxAttempts: Int
    public var baseDelay: Duration
    public var maxDelay: Duration
    /// The longest `Retry-After` honoured; longer requests are shortened to this.
    public var maxRetryAfter: Duration

    public init(maxAttempts: Int = 5, baseDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(5),
                maxRetryAfter: Duration = .seconds(30)) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxRetryAfter = maxRetryAfter
    }

    /// No retries at all.
    public static let none = RetryPolicy(maxAttempts: 1)

    /// The delay before retry number `retry` (0-based), honouring a `Retry-After` value.
    func delay(beforeRetry retry: Int, retryAfterSeconds: Int?) -> Duration {
        if let seconds = retryAfterSeconds { return min(.seconds(max(0, seconds)), maxRetryAfter) }
        let cap = min(maxDelay, baseDelay * (1 << min(retry, 20)))
        return .milliseconds(Int.random(in: 0...max(1, cap.milliseconds)))
    }
}

/// How to talk to registries: TLS, mirrors, timeouts, retries, credentials.
public struct RegistryOptions: Sendable {
    /// Hosts (`host[:port]`) reached over plain HTTP instead of HTTPS.
    public var plainHTTPHosts: Set<String>
    /// Hosts reached over HTTPS without verifying their certificate.
    public var insecureHosts: Set<String>
    /// A PEM bundle of extra CA certificates (in addition to the system's); nil for system CAs only.
    public var caCertificatePath: String?
    /// Mirrors per registry host, tried in order before the host itself for pulls, e.g.
    /// `["docker.io": ["mirror.example:5000"]]`. Pushes always go to the host.
    public var mirrors: [String: [String]]
    /// How long to wait for a TCP/TLS connection.
    public var connectTimeout: Duration
    /// A transfer slower than `lowSpeedLimit` bytes/s for this long is abandoned (and retried).
    public var lowSpeedTime: Duration
    public var lowSpeedLimit: Int
    /// Whole-request timeout for blob range reads (`readRange`, `BlobSource`); nil means none.
    public var rangeRequestTimeout: Duration?
    /// A server that ignores `Range` answers 200 with the whole blob; a range read then skips
    /// the bytes before the range, but only this many (default 64 MiB): a range further in
    /// fails with `RegistryError.rangeIgnored` instead of downloading most of a large blob.
    public var maxSkippedPrefix: UInt64
    public var retry: RetryPolicy
    /// Read credentials from this file only (Docker/containers `auths` format) instead of the
    /// usual search path.
    public var authFile: String?
    public var userAgent: String
    /// Reuse connections between requests (the default); false opens a new one each time.
    public var reuseConnections: Bool
    /// How long a redirect target of a blob (a storage-backend URL) is reused for later reads.
    public var redirectCacheLifetime: Duration
    /// Uploads larger than this go in PATCH chunks of this size; nil uploads monolithically.
    public var uploadChunkSize: UInt64?
    /// How to ask the token service: `.automatic` uses the OAuth2 POST form when there are
    /// credentials (falling back to GET), GET otherwise.
    public var tokenFetch: TokenFetchMethod
    /// A forward proxy (Dragonfly's dfdaemon) for blob range reads only; nil reads directly.
    public var blobProxy: BlobProxyOptions?
    /// Whole-blob downloads over plain HTTP (a local registry or mirror) move the body from the
    /// socket into the file inside the kernel (`splice`) and hash it from the page cache, instead
    /// of copying it through libcurl's buffers (the default). False: libcurl reads every byte.
    public var spliceBlobBodies = true

    /// How tokens are requested from a Bearer realm.
    public enum TokenFetchMethod: Sendable, Hashable {
        case automatic
        case get
        case post
    }

    public init(plainHTTPHosts: Set<String> = [], insecureHosts: Set<String> = [], caCertificatePath: String? = nil,
                mirrors: [String: [String]] = [:], connectTimeout: Duration = .seconds(10),
                lowSpeedTime: Duration = .seconds(30), lowSpeedLimit: Int = 1024,
                rangeRequestTimeout: Duration? = .seconds(60), retry: RetryPolicy = RetryPolicy(),
                authFile: String? = nil, userAgent: String = "ferry/0.1", reuseConnections: Bool = true,
                redirectCacheLifetime: Duration = .seconds(60), uploadChunkSize: UInt64? = nil,
                tokenFetch: TokenFetchMethod = .automatic, blobProxy: BlobProxyOptions? = nil,
                maxSkippedPrefix: UInt64 = 64 << 20) {
        self.plainHTTPHosts = plainHTTPHosts
        self.insecureHosts = insecureHosts
        self.caCertificatePath = caCertificatePath
        self.mirrors = mirrors
        self.connectTimeout = connectTimeout
        self.lowSpeedTime = lowSpeedTime
        self.lowSpeedLimit = lowSpeedLimit
        self.rangeRequestTimeout = rangeRequestTimeout
        self.retry = retry
        self.authFile = authFile
        self.userAgent = userAgent
        self.reuseConnections = reuseConnections
        self.redirectCacheLifetime = redirectCacheLifetime
        self.uploadChunkSize = uploadChunkSize
        self.tokenFetch = tokenFetch
        self.blobProxy = blobProxy
        self.maxSkippedPrefix = maxSkippedPrefix
    }

    /// "http" or "https" for a host.
    func scheme(for host: String) -> String { plainHTTPHosts.contains(host) ? "http" : "https" }

    /// The `/v2/` base URL of a host. Docker Hub's API lives at registry-1.docker.io.
    func baseURL(for host: String) -> String {
        let apiHost = host == "docker.io" ? "registry-1.docker.io" : host
        return "\(scheme(for: host))://\(apiHost)/v2/"
    }
}

extension Duration {
    var milliseconds: Int {
        Int(components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000)
    }
}
