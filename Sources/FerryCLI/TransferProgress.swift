import Foundation
import OCI
import Registry
import Synchronization

/// Per-layer progress bars on stderr while blobs move (bytes, percentage, rate), redrawn at
/// most ten times a second, and only when stderr is a terminal; always keeps the totals for
/// the `--json` summary.
final class TransferProgress: TransferObserver {
    private struct Row {
        var direction: TransferEvent.Direction
        var digest: Digest
        var total: UInt64?
        var bytes: UInt64 = 0
        var started: ContinuousClock.Instant
        var ended: ContinuousClock.Instant?
        var state = "…"
    }

    private struct State {
        var rows: [Row] = []
        var linesDrawn = 0
        var lastDraw: ContinuousClock.Instant?
        var totals = TransferTotals()
    }

    private let state = Mutex(State())
    private let drawing: Bool

    /// - Parameter drawing: nil decides by whether stderr is a terminal.
    init(drawing: Bool? = nil) {
        self.drawing = drawing ?? (isatty(STDERR_FILENO) == 1)
    }

    var totals: TransferTotals { state.withLock { $0.totals } }

    func observe(_ event: TransferEvent) {
        let now = ContinuousClock.now
        let output: String? = state.withLock { s in
            let index = s.rows.lastIndex { $0.digest == event.digest && $0.direction == event.direction }
            var force = true
            switch event.phase {
            case let .started(total):
                s.rows.append(Row(direction: event.direction, digest: event.digest, total: total, started: now))
            case let .progressed(bytes):
                guard let index else { return nil }
                s.rows[index].bytes = bytes
                force = false
            case let .finished(bytes, skipped):
                guard let index else { return nil }
                s.rows[index].bytes = skipped ? 0 : bytes
                s.rows[index].ended = now
                s.rows[index].state = skipped ? "exists" : "done"
                s.totals.record(event.direction, bytes: skipped ? 0 : bytes, skipped: skipped)
            case .failed:
                guard let index else { return nil }
                s.rows[index].ended = now
                s.rows[index].state = "failed"
            }
            guard drawing else { return nil }
            if !force, let last = s.lastDraw, now - last < .milliseconds(100) { return nil }
            s.lastDraw = now
            return render(&s, now: now)
        }
        if let output { FileHandle.standardError.write(Data(output.utf8)) }
    }

    /// Moves the cursor back over the previous drawing and writes every row again.
    private func render(_ s: inout State, now: ContinuousClock.Instant) -> String {
        var out = s.linesDrawn > 0 ? "\u{1B}[\(s.linesDrawn)A" : ""
        for row in s.rows {
            out += "\u{1B}[2K" + line(row, now: now) + "\n"
        }
        s.linesDrawn = s.rows.count
        return out
    }

    private func line(_ row: Row, now: ContinuousClock.Instant) -> String {
        let width = 24
        let fraction = row.total.map { $0 == 0 ? 1 : min(1, Double(row.bytes) / Double($0)) } ?? 0
        let filled = row.state == "exists" ? width : Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let seconds = max(1e-3, Double(((row.ended ?? now) - row.started).milliseconds) / 1000)
        let rate = Double(row.bytes) / seconds
        let size = row.total.map { "/" + megabytes($0) } ?? ""
        let status = row.ended == nil ? String(format: "%3.0f%%", fraction * 100) : row.state
        return "\(row.direction.rawValue) \(row.digest.hex.prefix(12)) [\(bar)] \(megabytes(row.bytes))\(size) "
            + "\(megabytes(UInt64(rate)))/s \(status)"
    }

    private func megabytes(_ bytes: UInt64) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
}

/// What moved over the network, for `--json` summaries.
struct TransferTotals: Codable, Sendable {
    var blobsPulled = 0
    var bytesPulled: UInt64 = 0
    var blobsPushed = 0
    var bytesPushed: UInt64 = 0
    /// Blobs the registry already had (or mounted), so nothing was uploaded.
    var blobsSkipped = 0

    mutating func record(_ direction: TransferEvent.Direction, bytes: UInt64, skipped: Bool) {
        if skipped { blobsSkipped += 1; return }
        switch direction {
        case .pull: blobsPulled += 1; bytesPulled += bytes
        case .push: blobsPushed += 1; bytesPushed += bytes
        }
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
