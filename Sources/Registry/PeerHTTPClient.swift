import Foundation

/// A plain-HTTP GET client for ferryd's peers: pooled libcurl handles, short timeouts, no
/// retries (the caller falls back to another peer or the registry), no proxy, no credentials.
/// Only a URL goes out; nothing else of the caller's configuration is sent.
public final class PeerHTTPClient: Sendable {
    /// What a peer answered.
    public struct Response: Sendable {
        public var status: Int
        public var body: [UInt8]
    }

    private let pool = HandlePool(limit: 64)
    private let connectTimeout: Duration
    private let maximumBody: Int
    private let userAgent: String
    private let sourceAddress: String?

    /// - Parameters:
    ///   - connectTimeout: how long to wait for the TCP connection to a peer.
    ///   - maximumBody: larger answers are cut off and reported as failures.
    ///   - sourceAddress: the local address requests leave from: this node's address in the peer
    ///     list, which is how peers recognise it (they serve only the addresses they list).
    public init(connectTimeout: Duration = .seconds(1), maximumBody: Int = 17 << 20, userAgent: String = "ferryd-peer/0.1",
                sourceAddress: String? = nil) {
        self.sourceAddress = sourceAddress
        self.connectTimeout = connectTimeout
        self.maximumBody = maximumBody
        self.userAgent = userAgent
    }

    /// GETs `url` once; the whole request must finish within `timeout`. Any status comes back
    /// as a `Response`; transport failures (refused, reset, timed out, an answer over the size
    /// limit) throw `RegistryError.unreachable` naming the peer. Task cancellation aborts the transfer.
    public func get(_ url: String, timeout: Duration) async throws -> Response {
        let limit = maximumBody
        let spec = makeSpec(url, timeout: timeout)
        return try await offload { cancel in
            var body: [UInt8] = []
            let response: CurlResponse
            do {
                response = try self.pool.withHandle { handle in
                    try handle.perform(spec, isCancelled: { cancel.isCancelled }) { _, _, piece in
                        body += piece
                        if body.count > limit { throw Self.failure(url, "answer larger than \(limit) bytes") }
                        return true
                    }
                }
            } catch let failure as CurlFailure {
                throw Self.failure(url, failure.message)
            }
            return Response(status: response.status, body: (200..<300).contains(response.status) ? body : response.errorBody)
        }
    }

    private static func failure(_ url: String, _ reason: String) -> RegistryError {
        let target = RegistryTarget(registry: RegistryOptions.authority(of: url), repository: "", object: "peer chunk request")
        return RegistryError.unreachable(target, url: url, attempts: 1, reason: reason)
    }

    private func makeSpec(_ url: String, timeout: Duration) -> CurlRequestSpec {
        var spec = CurlRequestSpec(method: "GET", url: url)
        spec.followRedirects = false
        spec.connectTimeoutMs = max(1, connectTimeout.milliseconds)
        spec.totalTimeoutMs = max(1, timeout.milliseconds)
        spec.lowSpeedLimit = 0
        spec.userAgent = userAgent
        spec.proxy = ""
        spec.sourceAddress = sourceAddress
        return spec
    }
}
