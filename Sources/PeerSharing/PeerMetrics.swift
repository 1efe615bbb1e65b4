public import Daemon
import Synchronization

/// What peer sharing did on this node, exported as `ferry_peer_*` metrics.
public final class PeerMetrics: Sendable {
    /// Per remote peer, as seen by this node's reads.
    public struct PerPeer: Sendable, Equatable {
        /// Chunks received and verified.
        public var chunks = 0
        public var bytes: UInt64 = 0
        /// Chunks whose bytes did not match their digest.
        public var badChunks = 0
        /// Requests refused, reset or timed out, or answered with an unexpected status.
        public var failures = 0
        /// Answers "I do not have it" (404, busy, or a differently encoded copy).
        public var misses = 0
    }

    /// What this node's peer server did.
    public struct Served: Sendable, Equatable {
        public var chunks = 0
        public var bytes: UInt64 = 0
        /// Requests for chunks this node neither had nor could fetch.
        public var misses = 0
        /// Requests turned away by the rate limit.
        public var rejected = 0
        /// Connections closed unanswered because they came from an address not in the peer list.
        public var refusedAddresses = 0
    }

    private let perPeer = Mutex<[String: PerPeer]>([:])
    private let served = Mutex(Served())
    /// Chunks this node fetched from its own sources as their home (for itself or for peers).
    public let homeFetches = Counter()
    /// Chunks this node fetched from its own sources after the peers failed to give them.
    public let fallbacks = Counter()

    public init() {}

    func update(_ peer: String, _ change: (inout PerPeer) -> Void) {
        perPeer.withLock { change(&$0[peer, default: PerPeer()]) }
    }

    func updateServed(_ change: (inout Served) -> Void) { served.withLock { change(&$0) } }

    /// Figures per remote peer.
    public var peers: [String: PerPeer] { perPeer.withLock { $0 } }
    /// Figures of this node's server.
    public var server: Served { served.withLock { $0 } }
}
