import Daemon
/// Highest-random-weight (rendezvous) hashing: each chunk's *home* is the peer with the highest
/// weight `w(peer, chunk)`. Every node computes the same home from the same peer list without
/// talking to anyone, and when a peer leaves only the chunks it was home of move (to their
/// second-ranked peer); the others stay where they are.
///
/// Weights use a 64-bit key per peer (FNV-1a of its address, then mixed) and per chunk (the first
/// eight bytes of its SHA-256, already uniform), combined by the splitmix64 finalizer: cheap
/// enough to rank 10,000 peers per chunk, and stable across processes and versions.
public enum RendezvousHashing {
    /// The key of a peer: FNV-1a 64 of its address ("host:port"), then mixed.
    public static func peerKey(_ peer: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a 64 offset basis
        for byte in peer.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3  // FNV-1a 64 prime
        }
        return mix(hash)
    }

    /// The key of a chunk: its digest's first eight bytes, little-endian.
    public static func chunkKey(_ digest: [UInt8]) -> UInt64 {
        var key: UInt64 = 0
        for (i, byte) in digest.prefix(8).enumerated() { key |= UInt64(byte) << (8 * UInt64(i)) }
        return key
    }

    /// The weight of `peer` (its key) for `chunk` (its key).
    public static func weight(peer: UInt64, chunk: UInt64) -> UInt64 { mix(peer ^ mix(chunk)) }

    /// `peers` ordered by their weight for the chunk, the home first (ties broken by address).
    public static func ranked(_ peers: [String], digest: [UInt8]) -> [String] {
        let chunk = chunkKey(digest)
        return peers.map { ($0, weight(peer: peerKey($0), chunk: chunk)) }
            .sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
            .map(\.0)
    }

    /// The home of a chunk among `peers`, or nil when there are none.
    public static func home(_ peers: [String], digest: [UInt8]) -> String? {
        let chunk = chunkKey(digest)
        var best: (String, UInt64)?
        for peer in peers {
            let w = weight(peer: peerKey(peer), chunk: chunk)
            if let b = best, b.1 > w || (b.1 == w && b.0 < peer) { continue }
            best = (peer, w)
        }
        return best?.0
    }

    /// The splitmix64 finalizer (Steele, Lea, Flood: "Fast splittable pseudorandom number
    /// generators", 2014): a bijection on 64 bits with good avalanche.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
