import Foundation
import Logging
import Prometheus
import Testing
@testable import Daemon

/// `/metrics` as swift-prometheus writes it: the request series recorded by backends, the series
/// read at scrape time, and series of things that are gone removed.
@Suite struct MetricsTests {
    /// Every sample line of an exposition, by series (name and labels as written).
    static func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                Issue.record("not a sample line: \(line)")
                continue
            }
            out[String(line[..<space])] = value
        }
        return out
    }

    @Test func requestSeriesAreRecordedAsRequestsAreAnswered() {
        let metrics = DaemonMetrics(backend: "fanotify")
        metrics.requestStarted()
        metrics.requestStarted()
        metrics.requestFinished(result: "ok", seconds: 0.003)
        metrics.requestAnswered(result: "unknown_file")
        let s = Self.samples(metrics.registry.emitToString())
        #expect(s[#"ferry_requests_total{backend="fanotify",result="ok"}"#] == 1)
        #expect(s[#"ferry_requests_total{backend="fanotify",result="unknown_file"}"#] == 1)
        #expect(s[#"ferry_fills_in_flight{backend="fanotify"}"#] == 1)
        #expect(s[#"ferry_fill_duration_seconds_bucket{backend="fanotify",le="0.0025"}"#] == 0)
        #expect(s[#"ferry_fill_duration_seconds_bucket{backend="fanotify",le="0.005"}"#] == 1)
        #expect(s[#"ferry_fill_duration_seconds_bucket{backend="fanotify",le="+Inf"}"#] == 1)
        #expect(s[#"ferry_fill_duration_seconds_count{backend="fanotify"}"#] == 1)
    }

    @Test func scrapedSeriesFollowTheirValuesAndVanishWithTheirThing() {
        let registry = PrometheusCollectorRegistry()
        let scraped = ScrapedSeries(registry: registry)
        let help = "Chunks received from a peer and verified."
        var first = Self.samples(scraped.scrape { out in
            out.counter("ferry_peer_chunks_received_total", help, labels: [("peer", "10.0.0.1:7000")], 5)
            out.counter("ferry_peer_chunks_received_total", help, labels: [("peer", "10.0.0.2:7000")], 7)
            out.gauge("ferry_images", "Images registered with ferryd.", 2)
        })
        #expect(first[#"ferry_peer_chunks_received_total{peer="10.0.0.1:7000"}"#] == 5)
        #expect(first[#"ferry_images"#] == 2)
        first = Self.samples(scraped.scrape { out in
            out.counter("ferry_peer_chunks_received_total", help, labels: [("peer", "10.0.0.1:7000")], 9)
            out.gauge("ferry_images", "Images registered with ferryd.", 1)
        })
        #expect(first[#"ferry_peer_chunks_received_total{peer="10.0.0.1:7000"}"#] == 9, "a counter shows the total, not a sum of scrapes")
        #expect(first[#"ferry_peer_chunks_received_total{peer="10.0.0.2:7000"}"#] == nil, "a dropped peer's series is gone")
        #expect(first["ferry_images"] == 1)
    }

    /// A label value from configuration or an image (a peer name with a quote, a backslash or
    /// a newline) cannot break the exposition or forge another series.
    @Test func labelValuesAreEscaped() {
        let scraped = ScrapedSeries(registry: PrometheusCollectorRegistry())
        let text = scraped.scrape { out in
            out.gauge("ferry_peer_live", "Whether a peer is currently used (1) or in backoff (0).",
                      labels: [("peer", "evil\"} 1\nferry_images{x=\"")], 0)
        }
        #expect(text.split(separator: "\n").filter { !$0.hasPrefix("#") }.count == 1, "\(text)")
        #expect(!text.contains("\nferry_images"))
    }
}
