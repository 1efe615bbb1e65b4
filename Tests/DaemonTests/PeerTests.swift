import Blob
import FerrySystem
import Foundation
import Logging
import Synchronization
import Testing
@testable import Daemon
@testable import PeerSharing

/// A transport standing in for the network: each peer answers from the chunk store of a
/// PeerNetwork-less table, lies, or is down.
final class FakePeers: PeerTransport {
    enum Behaviour { case honest, corrupt, down }
    let behaviours: [String: Behaviour]
    let chunks: [String: PeerChunkRecord]
    let asked = Mutex<[String: Int]>([:])

    init(behaviours: [String: Behaviour], chunks: [String: PeerChunkRecord]) {
        self.behaviours = behaviours
        self.chunks = chunks
    }

    func get(_ url: String, timeout: Duration) async throws -> (status: Int, body: [UInt8]) {
        // http://<peer>/chunks/<hex>?fetch=1
        let rest = url.dropFirst("http://".count)
        let peer = String(rest.prefix { $0 != "/" })
        asked.withLock { $0[peer, default: 0] += 1 }
        switch behaviours[peer] ?? .down {
        case .down:
            throw PeerDown()
        case .honest, .corrupt:
            guard let hex = rest.split(separator: "/").last?.split(separator: "?").first, var record = chunks[String(hex)] else {
                return (404, [])
            }
            if behaviours[peer] == .corrupt { record.stored[record.stored.count / 2] ^= 0x40 }
            return (200, record.encoded())
        }
    }
    struct PeerDown: Error {}
}

@Suite struct RendezvousHashingTests {
    static func digest(_ i: Int) -> [UInt8] { SHA256.hash(Array("chunk \(i)".utf8)) }

    @Test func everyPeerIsHomeOfAboutItsShare() {
        let peers = (1...8).map { "10.0.0.\($0):7900" }
        var count: [String: Int] = [:]
        for i in 0..<8000 { count[RendezvousHashing.home(peers, digest: Self.digest(i)) ?? "", default: 0] += 1 }
        for peer in peers { #expect((800...1200).contains(count[peer] ?? 0), "\(peer): \(count[peer] ?? 0) of 8000") }
    }

    @Test func removingAPeerMovesOnlyItsChunksToTheirSecondChoice() {
        let peers = (1...8).map { "10.0.0.\($0):7900" }
        let gone = peers[3]
        let rest = peers.filter { $0 != gone }
        for i in 0..<2000 {
            let d = Self.digest(i)
            let ranked = RendezvousHashing.ranked(peers, digest: d)
            #expect(ranked.first == RendezvousHashing.home(peers, digest: d))
            let after = RendezvousHashing.home(rest, digest: d)
            #expect(after == (ranked[0] == gone ? ranked[1] : ranked[0]))
        }
    }

    @Test func homesDoNotDependOnListOrder() {
        let peers = (1...5).map { "[fd00::\($0)]:7900" }
        for i in 0..<200 {
            #expect(RendezvousHashing.home(peers, digest: Self.digest(i)) == RendezvousHashing.home(peers.reversed(), digest: Self.digest(i)))
        }
    }
}

@Suite struct PeerSetTests {
    @Test func peersFileIgnoresCommentsAndBlankLines() {
        #expect(PeerSet.parse("# cluster\n10.0.0.2:7900\n\n  10.0.0.3:7900  # rack 2\n") == ["10.0.0.2:7900", "10.0.0.3:7900"])
    }

    @Test func aFailedPeerLeavesTheLiveSetUntilItIsHealthyAgain() {
        let set = PeerSet(selfAddress: "a:1", peers: ["b:1", "c:1"], file: nil)
        #expect(set.live == ["a:1", "b:1", "c:1"])
        set.markFailed("b:1", .unreachable)
        set.markFailed("a:1", .unreachable)
        set.markFailed("c:1", .badBytes)
        #expect(set.live == ["a:1"], "this node itself always stays")
        set.markHealthy("c:1")
        #expect(set.live == ["a:1"], "a good answer does not end a quarantine early")
        #expect(set.dueForCheck().isEmpty)
        Thread.sleep(forTimeInterval: 1.05)
        #expect(set.dueForCheck() == ["b:1"], "after its backoff, b is health-checked")
        set.markHealthy("b:1")
        #expect(set.live == ["a:1", "b:1"])
    }

    @Test func thePeersFileIsReReadWhenItChanges() throws {
        let path = NSTemporaryDirectory() + "ferry-peers-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "b:1\n".write(toFile: path, atomically: true, encoding: .utf8)
        let set = PeerSet(selfAddress: "a:1", peers: [], file: path)
        #expect(set.members == ["a:1", "b:1"])
        try "b:1\nc:1\n".write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(5)], ofItemAtPath: path)
        Thread.sleep(forTimeInterval: 1.1)
        #expect(set.members == ["a:1", "b:1", "c:1"])
    }
}

@Suite struct PeerChunkSourceTests {
    @Test func recordRoundTripsAndRejectsGarbage() {
        let record = PeerChunkRecord(compression: .lz4, uncompressedSize: 70_000, stored: [1, 2, 3])
        #expect(record.encoded() == [0x46, 0x43, 1, 0, 0x70, 0x11, 0x01, 0x00, 1, 2, 3])
        #expect(PeerChunkRecord(decoding: record.encoded()) == record)
        #expect(PeerChunkRecord(decoding: [0x46, 0x44, 1, 0, 0, 0, 0, 0]) == nil)
        #expect(PeerChunkRecord(decoding: [0x46, 0x43, 9, 0, 0, 0, 0, 0]) == nil)
    }

    /// Chunks come from their home peers; what a lying or dead home was asked for comes from
    /// the registry fallback; the result is the blob's exact bytes, and the liar is counted.
    @Test func liesAndOutagesFallBackToTheRegistryAndAreCounted() async throws {
        let blob = try TestBlob.make(chunks: 24)
        var records: [String: PeerChunkRecord] = [:]
        for c in blob.info.chunks {
            let stored = Array(blob.bytes[Int(c.compressedOffset) ..< Int(c.compressedRange.upperBound)])
            records[hexString(c.digest)] = PeerChunkRecord(compression: c.compression, uncompressedSize: c.uncompressedSize, stored: stored)
        }
        let transport = FakePeers(behaviours: ["good:1": .honest, "liar:1": .corrupt, "dead:1": .down], chunks: records)
        let dir = NSTemporaryDirectory() + "ferry-peer-store-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var quiet = Logger(label: "test")
        quiet.logLevel = .critical
        let network = PeerNetwork(peers: PeerSet(selfAddress: "me:1", peers: ["good:1", "liar:1", "dead:1"], file: nil),
                                  transport: transport, store: try ChunkStore(directory: dir), logger: quiet)
        let registry = MemorySource(name: "registry", blobBytes: blob.bytes)
        let source = network.source(fallback: registry)
        let all = 0 ..< blob.info.compressedSize
        #expect(try await source.read(blob: blob.info, range: all) == blob.bytes)

        let homes = blob.info.chunks.map { RendezvousHashing.home(["me:1", "good:1", "liar:1", "dead:1"], digest: $0.digest) }
        let perPeer = network.metrics.peers
        #expect(homes.contains("liar:1") && homes.contains("dead:1") && homes.contains("good:1"), "each kind of peer is home of some chunk")
        #expect((perPeer["liar:1"]?.badChunks ?? 0) >= 1)
        #expect((perPeer["dead:1"]?.failures ?? 0) >= 1)
        #expect((perPeer["good:1"]?.badChunks ?? 0) == 0)
        #expect((perPeer["good:1"]?.chunks ?? 0) >= 1)
        #expect(!network.peers.live.contains("liar:1") && !network.peers.live.contains("dead:1"))
        // Chunks this node is home of came from the registry and wait in the store for peers.
        #expect(network.metrics.homeFetches.current >= homes.filter { $0 == "me:1" }.count)
        for (i, home) in homes.enumerated() where home == "me:1" {
            #expect(network.store.loadStored(blob.info.chunks[i].digest) != nil)
        }
    }

    @Test func runsMustBeWholeChunks() throws {
        let blob = try TestBlob.make(chunks: 3)
        let c = blob.info.chunks
        #expect(try PeerChunkSource.chunks(of: blob.info, exactly: c[1].compressedOffset ..< c[2].compressedRange.upperBound) == [1, 2])
        #expect(throws: FillError.self) { try PeerChunkSource.chunks(of: blob.info, exactly: c[1].compressedOffset + 1 ..< c[2].compressedRange.upperBound) }
    }
}

@Suite struct PeerServerTests {
    static func network(_ dir: String, peers: [String] = []) throws -> PeerNetwork {
        var quiet = Logger(label: "test")
        quiet.logLevel = .critical
        return PeerNetwork(peers: PeerSet(selfAddress: "me:1", peers: peers, file: nil), transport: FakePeers(behaviours: [:], chunks: [:]),
                           store: try ChunkStore(directory: dir), logger: quiet)
    }

    static func get(_ path: String, _ query: [String: String] = [:]) -> ControlRequest {
        ControlRequest(method: "GET", path: path, query: query, body: [])
    }

    /// Ten peers asking at once for a chunk this node lacks cost one registry read; all get the
    /// same verified record, and later asks are served from the store.
    @Test func concurrentAsksForOneChunkAreOneRegistryFetch() async throws {
        let dir = NSTemporaryDirectory() + "ferry-peer-server-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let network = try Self.network(dir)
        let blob = try TestBlob.make(chunks: 4)
        let registry = MemorySource(name: "registry", blobBytes: blob.bytes, delay: .milliseconds(200))
        network.register(BootstrapMetadata(chunkSizeLog2: 16, compression: .lz4, blobs: [blob.info]), source: registry)
        let limiter = PeerServeLimiter(concurrency: 64, bytesPerSecond: 0)
        let chunk = blob.info.chunks[2]
        let path = "/chunks/\(hexString(chunk.digest))"
        let expected = Array(blob.bytes[Int(chunk.compressedOffset) ..< Int(chunk.compressedRange.upperBound)])

        let answers = await withTaskGroup(of: ControlResponse.self) { group in
            for _ in 0..<10 { group.addTask { await network.serve(Self.get(path, ["fetch": "1"]), limiter: limiter) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(registry.requests.current == 1)
        for answer in answers {
            #expect(answer.status == 200)
            #expect(PeerChunkRecord(decoding: answer.body)?.stored == expected)
        }
        let later = await network.serve(Self.get(path), limiter: limiter)
        #expect(later.status == 200 && PeerChunkRecord(decoding: later.body)?.stored == expected)
        #expect(registry.requests.current == 1, "served from the store")
        #expect(network.metrics.server.chunks == 11)
    }

    @Test func unknownChunksBadPathsAndNonGETsAreRefused() async throws {
        let dir = NSTemporaryDirectory() + "ferry-peer-server-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let network = try Self.network(dir)
        let limiter = PeerServeLimiter(concurrency: 64, bytesPerSecond: 0)
        let unknown = "/chunks/" + String(repeating: "ab", count: 32)
        #expect(await network.serve(Self.get(unknown, ["fetch": "1"]), limiter: limiter).status == 404)
        #expect(await network.serve(Self.get("/chunks/../../etc/passwd"), limiter: limiter).status == 404)
        #expect(await network.serve(Self.get("/images"), limiter: limiter).status == 404)
        #expect(await network.serve(ControlRequest(method: "DELETE", path: unknown, query: [:], body: []), limiter: limiter).status == 404)
        #expect(await network.serve(Self.get("/health"), limiter: limiter).status == 200)
        #expect(network.metrics.server.misses == 1)
    }

    @Test func requestsBeyondTheConcurrencyLimitAreTurnedAway() {
        let limiter = PeerServeLimiter(concurrency: 2, bytesPerSecond: 0)
        #expect(limiter.enter() && limiter.enter())
        #expect(!limiter.enter())
        limiter.leave()
        #expect(limiter.enter())
    }
}
