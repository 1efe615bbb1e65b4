public import Daemon
public import Blob
import FerrySystem
import Logging

/// Reads a run of chunks through the peers: each chunk from its home peer (rendezvous hashing
/// over the live peers), which fetches it from its own registry once if it lacks it
/// (`GET /chunks/<hex>?fetch=1`). Chunks this node is home of, and chunks no peer gave in
/// verified form, are read through `fallback` (this node's registry source) — coalesced with
/// any other read of the same chunk on this node. Every chunk from a peer is verified here (to
/// know which peer lied) and again by `BlobFiller`.
public struct PeerChunkSource: ChunkSource {
    let network: PeerNetwork
    let fallback: any ChunkSource
    public var name: String { "peers" }

    /// Remote peers asked for one chunk before this node fetches it itself.
    static let maximumPeerTries = 2

    public func read(blob: BlobInfo, range: Range<UInt64>) async throws -> [UInt8] {
        let indexes = try Self.chunks(of: blob, exactly: range)
        let live = network.peers.live
        let me = network.peers.selfAddress
        var selfHomed: [Int] = []
        var remote: [(index: Int, ranked: [String])] = []
        for i in indexes {
            let ranked = RendezvousHashing.ranked(live, digest: blob.chunks[i].digest)
            // Peers ranked before this node; when this node comes first it is the home.
            let before = Array(ranked.prefix { $0 != me }.prefix(Self.maximumPeerTries))
            if before.isEmpty { selfHomed.append(i) } else { remote.append((i, before)) }
        }
        var pieces: [Int: [UInt8]] = [:]
        async let own = network.home.fetch(blob: blob, indexes: selfHomed, from: fallback)
        var missed: [Int] = []
        await withTaskGroup(of: (Int, [UInt8]?).self) { group in
            var next = 0
            func launch() {
                guard next < remote.count else { return }
                let (i, ranked) = remote[next]
                next += 1
                group.addTask { (i, await self.ask(ranked, for: blob.chunks[i])) }
            }
            for _ in 0..<network.options.parallelRequests { launch() }
            for await (i, bytes) in group {
                if let bytes { pieces[i] = bytes } else { missed.append(i) }
                launch()
            }
        }
        for (i, bytes) in zip(selfHomed, try await own) { pieces[i] = bytes }
        if !missed.isEmpty {
            missed.sort()
            network.metrics.fallbacks.add(missed.count)
            for (i, bytes) in zip(missed, try await network.home.fetch(blob: blob, indexes: missed, from: fallback)) { pieces[i] = bytes }
        }
        var out: [UInt8] = []
        out.reserveCapacity(Int(range.upperBound - range.lowerBound))
        for i in indexes {
            guard let bytes = pieces[i] else { throw FillError.sourceMissing(source: name, blob: blob.hexDigest) }
            out += bytes
        }
        return out
    }

    /// Asks the peers in `ranked` order for one chunk; returns its verified stored bytes, or nil.
    private func ask(_ ranked: [String], for chunk: ChunkInfo) async -> [UInt8]? {
        let hex = hexString(chunk.digest)
        for peer in ranked {
            let answer: (status: Int, body: [UInt8])
            do {
                answer = try await network.transport.get("http://\(peer)/chunks/\(hex)?fetch=1", timeout: network.options.requestTimeout)
            } catch is CancellationError {
                return nil
            } catch {
                network.metrics.update(peer) { $0.failures += 1 }
                network.peers.markFailed(peer, .unreachable)
                network.logger.info("peer failed; trying the next source", metadata: ["peer": "\(peer)", "error": "\(error)"])
                continue
            }
            switch answer.status {
            case 200:
                guard let record = PeerChunkRecord(decoding: answer.body) else {
                    network.metrics.update(peer) { $0.badChunks += 1 }
                    network.peers.markFailed(peer, .badBytes)
                    network.logger.warning("peer sent a malformed chunk record", metadata: ["peer": "\(peer)", "chunk": "\(hex)"])
                    continue
                }
                guard record.matches(chunk) else {
                    // Same content, encoded differently (from another image): not this blob's bytes.
                    network.metrics.update(peer) { $0.misses += 1 }
                    continue
                }
                do {
                    try record.verify(digest: chunk.digest, name: "peer \(peer)")
                } catch {
                    network.metrics.update(peer) { $0.badChunks += 1 }
                    network.peers.markFailed(peer, .badBytes)
                    network.logger.warning("peer sent a chunk that does not match its digest; quarantined",
                                           metadata: ["peer": "\(peer)", "chunk": "\(hex)", "error": "\(error)"])
                    continue
                }
                network.peers.markHealthy(peer)
                network.metrics.update(peer) { $0.chunks += 1; $0.bytes += UInt64(record.stored.count) }
                return record.stored
            case 404, 503:
                network.metrics.update(peer) { $0.misses += 1 }
            default:
                network.metrics.update(peer) { $0.failures += 1 }
                network.peers.markFailed(peer, .unreachable)
            }
        }
        return nil
    }

    /// The chunks whose stored bytes make up exactly `range` (BlobFiller asks for runs of whole
    /// chunks, which lie back to back in the blob).
    static func chunks(of blob: BlobInfo, exactly range: Range<UInt64>) throws -> [Int] {
        var lo = 0, hi = blob.chunks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if blob.chunks[mid].compressedOffset < range.lowerBound { lo = mid + 1 } else { hi = mid }
        }
        var out: [Int] = []
        var end = range.lowerBound
        var i = lo
        while i < blob.chunks.count, end < range.upperBound, blob.chunks[i].compressedOffset == end {
            out.append(i)
            end = blob.chunks[i].compressedRange.upperBound
            i += 1
        }
        guard end == range.upperBound, !out.isEmpty || range.isEmpty else {
            throw FillError.sourceMissing(source: "peers", blob: "\(blob.hexDigest) bytes \(range.lowerBound)..<\(range.upperBound) (not whole chunks)")
        }
        return out
    }
}
