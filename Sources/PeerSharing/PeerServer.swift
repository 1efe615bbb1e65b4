import Daemon
import Blob
import FerrySystem
import Logging
import Foundation
import Synchronization

/// The peer side of ferryd: serves, read-only and by chunk digest only, the chunks this node
/// holds, over HTTP on a TCP port (`peer_listen`).
///
/// - `GET /chunks/<64 hex>`: the chunk from this node's store (a `PeerChunkRecord`), or 404.
/// - `GET /chunks/<64 hex>?fetch=1`: the same, but a chunk of an image this node registered is
///   first fetched from this node's own registry (once, however many peers ask at once).
/// - `GET /health`: 200 while the node serves.
///
/// Every record is verified before it is sent. Requests beyond `serveConcurrency` get 503, and
/// `serveRateLimit` spaces answers out to that many bytes per second.
extension PeerNetwork {
    /// Listens on `address` ("host:port", IPv4 or bracketed IPv6 literal; port 0 picks one) and
    /// serves peers (SwiftNIO, no request bodies, bounded connections). Returns the bound port.
    @discardableResult
    public func startServer(listen address: String) async throws -> UInt16 {
        guard let (host, port) = Self.split(address) else {
            throw DaemonError.configuration("peer_listen \"\(address)\" is not host:port with a numeric address")
        }
        let (listener, bound) = try TCPSocket.listen(host: host, port: port)
        let limiter = PeerServeLimiter(concurrency: options.serveConcurrency, bytesPerSecond: options.serveRateLimit,
                                       missesPerSecond: options.missesPerSecond)
        let peers = self.peers, metrics = self.metrics
        try await ControlHTTP.serve(listener: listener, limits: .networkPort, admit: { remote in
            // Only the configured peers (this node's own address among them) are served: a
            // connection from any other address is closed unanswered.
            guard let ip = remote, peers.admits(address: ip) else {
                metrics.updateServed { $0.refusedAddresses += 1 }
                return false
            }
            return true
        }) { [self] request in await serve(request, limiter: limiter) }
        startHealthChecks()
        logger.info("serving chunks to peers", metadata: ["listen": "\(host):\(bound)", "peers": "\(peers.members.count)"])
        return bound
    }

    func serve(_ request: ControlRequest, limiter: PeerServeLimiter) async -> ControlResponse {
        guard request.method == "GET" else { return .error("peers may only GET", status: 404) }
        if request.path == "/health" { return .json(["status": "ok"]) }
        guard request.path.hasPrefix("/chunks/"), let digest = Self.digest(hex: String(request.path.dropFirst("/chunks/".count))) else {
            return .error("no route for \(request.path)", status: 404)
        }
        guard limiter.enter() else {
            metrics.updateServed { $0.rejected += 1 }
            return .error("busy", status: 503)
        }
        defer { limiter.leave() }
        // A chunk the store lacks costs a lookup or a registry fetch: misses have a budget of their own.
        guard store.contains(digest) || limiter.allowMiss() else {
            metrics.updateServed { $0.rejected += 1 }
            return .error("too many requests for chunks not here", status: 503)
        }
        guard let record = await record(for: digest, fetch: request.query["fetch"] == "1") else {
            metrics.updateServed { $0.misses += 1 }
            return .error("no such chunk here", status: 404)
        }
        let body = record.encoded()
        await limiter.pace(bytes: body.count)
        metrics.updateServed { $0.chunks += 1; $0.bytes += UInt64(body.count) }
        return ControlResponse(status: 200, contentType: "application/octet-stream", body: body)
    }

    /// The chunk, verified: from the store, else (when asked to) fetched as its home.
    private func record(for digest: [UInt8], fetch: Bool) async -> PeerChunkRecord? {
        if let stored = store.loadStored(digest) {
            let record = PeerChunkRecord(compression: stored.compression, uncompressedSize: stored.uncompressedSize, stored: stored.stored)
            if (try? record.verify(digest: digest, name: "store")) != nil { return record }
            logger.warning("damaged chunk in the store not served", metadata: ["chunk": "\(hexString(digest))"])
        }
        guard fetch, let location = location(of: digest) else { return nil }
        do {
            guard let stored = try await home.fetch(blob: location.blob, indexes: [location.index], from: location.source).first else { return nil }
            let info = location.blob.chunks[location.index]
            return PeerChunkRecord(compression: info.compression, uncompressedSize: info.uncompressedSize, stored: stored)
        } catch {
            logger.info("cannot fetch a chunk a peer asked for", metadata: ["chunk": "\(hexString(digest))", "error": "\(error)"])
            return nil
        }
    }

    /// 32 bytes from 64 lower- or upper-case hex digits.
    static func digest(hex: String) -> [UInt8]? {
        hex.utf8.count == 64 ? bytesFromHex(hex) : nil
    }

    /// "host:port" or "[v6]:port" → (host, port).
    public static func split(_ address: String) -> (String, UInt16)? {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }
}

/// The server's rate limit: a bound on requests in progress and a byte budget per second
/// (a token bucket holding at most one second of budget).
final class PeerServeLimiter: Sendable {
    private let concurrency: Int
    private let bytesPerSecond: UInt64
    private let active = Atomic<Int>(0)
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant

        /// Adds what `rate` per second earned since the last refill, up to one second's worth.
        mutating func refill(rate: Double) {
            let now = ContinuousClock.now
            let elapsed = now - updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            tokens = min(rate, tokens + seconds * rate)
            updated = now
        }
    }
    private let bucket: Mutex<Bucket>
    private let missesPerSecond: Double
    private let misses: Mutex<Bucket>

    init(concurrency: Int, bytesPerSecond: UInt64, missesPerSecond: Int = 0) {
        self.concurrency = concurrency
        self.bytesPerSecond = bytesPerSecond
        bucket = Mutex(Bucket(tokens: Double(bytesPerSecond), updated: .now))
        self.missesPerSecond = Double(missesPerSecond)
        misses = Mutex(Bucket(tokens: Double(missesPerSecond), updated: .now))
    }

    /// Takes one miss from a bucket of `missesPerSecond` (holding at most one second's worth);
    /// false when it is empty. Always true without a limit.
    func allowMiss() -> Bool {
        guard missesPerSecond > 0 else { return true }
        let rate = missesPerSecond
        return misses.withLock { b in
            b.refill(rate: rate)
            guard b.tokens >= 1 else { return false }
            b.tokens -= 1
            return true
        }
    }

    func enter() -> Bool {
        if active.add(1, ordering: .relaxed).newValue <= concurrency { return true }
        active.subtract(1, ordering: .relaxed)
        return false
    }

    func leave() { active.subtract(1, ordering: .relaxed) }

    /// Waits until `bytes` fit the budget.
    func pace(bytes: Int) async {
        guard bytesPerSecond > 0 else { return }
        let rate = Double(bytesPerSecond)
        let wait = bucket.withLock { b -> Double in
            b.refill(rate: rate)
            b.tokens -= Double(bytes)
            return b.tokens < 0 ? -b.tokens / rate : 0
        }
        if wait > 0 { try? await Task.sleep(for: .milliseconds(Int(wait * 1000))) }
    }
}
