import Daemon
import FerrySystem
import Foundation
import Synchronization

/// The peers a node shares chunks with, and which of them are live.
///
/// Members come from a static list and/or a file (one `host:port` a line, `#` comments), the
/// file re-read when its modification time changes — what an orchestrator writes. A peer that
/// fails (refused, timed out, broken answer) is avoided for a backoff that doubles with each
/// consecutive failure (1 s … 30 s) and is then health-checked before it is used again; a peer
/// that served bytes that do not match their digest is quarantined for longer (60 s … 15 min).
public final class PeerSet: Sendable {
    /// This node's own address as the other peers know it, if it serves chunks.
    public let selfAddress: String?
    private let staticPeers: [String]
    private let file: String?

    /// Why a peer is being avoided.
    public enum Trouble: Sendable {
        /// Refused, reset, timed out or answered something other than a chunk or a miss.
        case unreachable
        /// Served bytes that failed verification.
        case badBytes
    }

    struct Health {
        /// Consecutive failures to answer; reset by a good answer.
        var failures = 0
        /// Times the peer served bad bytes; never reset, so a repeat liar stays out longer.
        var strikes = 0
        var avoidUntil: ContinuousClock.Instant?
    }
    private struct State {
        var members: [String] = []
        var fileStamp: Date?
        var lastFileCheck: ContinuousClock.Instant?
        var health: [String: Health] = [:]
    }
    private let state = Mutex(State())

    public init(selfAddress: String?, peers: [String], file: String?) {
        self.selfAddress = selfAddress
        staticPeers = peers
        self.file = file
        state.withLock { $0.members = Self.merge(selfAddress, peers, []) }
        reloadIfChanged(force: true)
    }

    /// Every configured peer, this node included (sorted, unique).
    public var members: [String] {
        reloadIfChanged()
        return state.withLock { $0.members }
    }

    /// Whether a connection from `address` (an IP address as the socket reports it) comes from a
    /// member: peers are recognised by the address the peer list gives them (a peer's client
    /// binds its requests to its own listed address). An IPv4-mapped IPv6 address counts as IPv4.
    public func admits(address: String) -> Bool {
        let remote = address.hasPrefix("::ffff:") && address.contains(".") ? String(address.dropFirst(7)) : address
        return members.contains { member in
            guard let (host, _) = PeerNetwork.split(member) else { return false }
            return host == remote
        }
    }

    /// The members that are not being avoided (a peer in backoff stays out until a health check
    /// passes); this node is always live.
    public var live: [String] {
        reloadIfChanged()
        return state.withLock { s in
            s.members.filter { peer in peer == selfAddress || s.health[peer]?.avoidUntil == nil }
        }
    }

    /// Peers whose backoff has passed and that should be health-checked before use.
    func dueForCheck() -> [String] {
        let now = ContinuousClock.now
        return state.withLock { s in
            s.members.filter { peer in
                guard peer != selfAddress, let h = s.health[peer], let until = h.avoidUntil else { return false }
                return until <= now
            }
        }
    }

    /// Records a failure of `peer` and starts (or extends) its backoff.
    public func markFailed(_ peer: String, _ trouble: Trouble) {
        let now = ContinuousClock.now
        state.withLock { s in
            var h = s.health[peer] ?? Health()
            let until: ContinuousClock.Instant
            switch trouble {
            case .unreachable:
                h.failures += 1
                until = now + min(.seconds(30), .seconds(1) * (1 << min(h.failures - 1, 10)))
            case .badBytes:
                h.strikes += 1
                until = now + min(.seconds(900), .seconds(60) * (1 << min(h.strikes - 1, 10)))
            }
            h.avoidUntil = max(h.avoidUntil ?? until, until)
            s.health[peer] = h
        }
    }

    /// The peer answered well (a chunk, a miss or a health check): it is live again, unless it
    /// is still serving a quarantine or backoff that has not run out.
    public func markHealthy(_ peer: String) {
        let now = ContinuousClock.now
        state.withLock { s in
            guard var h = s.health[peer] else { return }
            h.failures = 0
            if let until = h.avoidUntil, until <= now { h.avoidUntil = nil }
            s.health[peer] = h
        }
    }

    /// (peer, live, consecutive failures) for metrics.
    func snapshot() -> [(peer: String, live: Bool, failures: Int)] {
        let liveSet = Set(live)
        return state.withLock { s in
            s.members.map { ($0, liveSet.contains($0), s.health[$0]?.failures ?? 0) }
        }
    }

    /// Re-reads the peers file when its modification time changed (checked at most once a second).
    private func reloadIfChanged(force: Bool = false) {
        guard let file else { return }
        let now = ContinuousClock.now
        let due = state.withLock { s -> Bool in
            if !force, let last = s.lastFileCheck, now - last < .seconds(1) { return false }
            s.lastFileCheck = now
            return true
        }
        guard due else { return }
        let stamp = (try? FileManager.default.attributesOfItem(atPath: file))?[.modificationDate] as? Date
        guard force || stamp != state.withLock({ $0.fileStamp }) else { return }
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        let listed = Self.parse(text)
        state.withLock { s in
            s.fileStamp = stamp
            s.members = Self.merge(selfAddress, staticPeers, listed)
        }
    }

    /// Addresses of a peers file: one a line; blank lines and `#` comments ignored.
    public static func parse(_ text: String) -> [String] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let address = content.trimmingCharacters(in: .whitespaces)
            return address.isEmpty ? nil : address
        }
    }

    private static func merge(_ selfAddress: String?, _ a: [String], _ b: [String]) -> [String] {
        Array(Set(a + b + (selfAddress.map { [$0] } ?? []))).sorted()
    }
}
