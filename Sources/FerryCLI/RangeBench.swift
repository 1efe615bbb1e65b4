import ArgumentParser
import Foundation
import OCI
import Registry

/// `ferry bench-ranges docker://HOST/REPO --blob DIGEST`: random range reads through the
/// registry client, as the daemon does them; prints one JSON object (used by
/// Tools/bench-registry).
struct RangeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-ranges", abstract: "Measure random range reads of a registry blob (JSON result).", shouldDisplay: false)
    @Argument(help: "docker://HOST/REPO") var repository: String
    @Option(help: "The blob to read.") var blob: String
    @Option(help: "Number of reads.") var count: Int = 500
    @Option(help: "Bytes per read.") var size: String = "4KiB"
    @Option(help: "Reads in flight.") var concurrency: Int = 1
    @Flag(help: "Open a new connection for every read.") var freshConnections = false
    @OptionGroup var registry: RegistryFlags

    struct Result: Encodable {
        var reads: Int
        var bytesPerRead: UInt64
        var concurrency: Int
        var reuseConnections: Bool
        var seconds: Double
        var megabytesPerSecond: Double
        var p50Milliseconds: Double
        var p99Milliseconds: Double
        var meanMilliseconds: Double
    }

    func run() throws {
        try reportingErrors {
            guard case let .registry(ref) = try ImageReference(parsing: repository) else {
                throw ValidationError("expected docker://HOST/REPO")
            }
            let digest = try Digest(parsing: blob)
            let length = try parseSize(size)
            var options = try registry.options()
            options.reuseConnections = !freshConnections
            let client = RegistryClient(options: options)
            let reads = count, workers = max(1, concurrency)
            let blobSize = try waitFor { try await client.blobExists(ref, digest: digest) } ?? 0
            guard blobSize > Int64(length) else { throw ValidationError("blob \(digest) has \(blobSize) bytes, fewer than one read") }
            let last = UInt64(blobSize) - length
            // One warm-up read (token, connection) outside the measurement.
            _ = try waitFor { try await client.readRange(ref, digest: digest, range: 0..<length) }
            let clock = ContinuousClock()
            let start = clock.now
            let latencies: [Double] = try waitFor {
                try await withThrowingTaskGroup(of: [Double].self) { group in
                    for worker in 0..<workers {
                        group.addTask {
                            var mine: [Double] = []
                            for _ in stride(from: worker, to: reads, by: workers) {
                                let offset = UInt64.random(in: 0...last)
                                let t0 = clock.now
                                let bytes = try await client.readRange(ref, digest: digest, range: offset..<(offset + length))
                                guard bytes.count == Int(length) else { throw ValidationError("short read at \(offset)") }
                                mine.append(milliseconds(clock.now - t0))
                            }
                            return mine
                        }
                    }
                    var all: [Double] = []
                    for try await part in group { all += part }
                    return all
                }
            }
            let seconds = milliseconds(clock.now - start) / 1000
            let sorted = latencies.sorted()
            func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
            let result = Result(
                reads: reads, bytesPerRead: length, concurrency: workers, reuseConnections: !freshConnections,
                seconds: seconds, megabytesPerSecond: Double(UInt64(reads) * length) / 1e6 / max(seconds, 1e-9),
                p50Milliseconds: percentile(0.5), p99Milliseconds: percentile(0.99),
                meanMilliseconds: sorted.reduce(0, +) / Double(max(1, sorted.count)))
            print(String(decoding: try CanonicalJSON.encode(result), as: UTF8.self))
        }
    }
}

private func milliseconds(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

/// `ferry bench-blob docker://HOST/REPO --blob DIGEST --to FILE`: one whole-blob download through
/// the path `ferry pull` takes for a layer (streamed to the file, size and SHA-256 verified),
/// timed inside the process from the blob's GET to the verified file; prints one JSON object.
/// Tools/bench-registry sets it beside curl's own `time_total` for the same URL, so both sides
/// are timed from the transfer's start to its end and neither includes its process start-up.
struct BlobBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-blob", abstract: "Measure one verified download of a registry blob (JSON result).", shouldDisplay: false)
    @Argument(help: "docker://HOST/REPO") var repository: String
    @Option(help: "The blob to download.") var blob: String
    @Option(help: "The file to write (created or truncated; kept).") var to: String
    @Flag(help: "Read the whole body through libcurl, never splicing it from the socket.") var noSplice = false
    @OptionGroup var registry: RegistryFlags

    struct Result: Encodable {
        var bytes: UInt64
        var seconds: Double
        var megabytesPerSecond: Double
    }

    func run() throws {
        try reportingErrors {
            guard case let .registry(ref) = try ImageReference(parsing: repository) else {
                throw ValidationError("expected docker://HOST/REPO")
            }
            let digest = try Digest(parsing: blob)
            var options = try registry.options()
            options.spliceBlobBodies = !noSplice
            let client = RegistryClient(options: options)
            let path = to
            // Set-up outside the measurement, as curl's time_total leaves out its own: the client's
            // first request (libcurl and OpenSSL initialise) is a HEAD of the blob, as `ferry pull`
            // resolves the manifest before it fetches a layer.
            _ = try waitFor { try await client.blobExists(ref, digest: digest) }
            let clock = ContinuousClock()
            let start = clock.now
            let bytes = try waitFor { try await client.fetchBlob(ref, digest: digest, to: path) }
            let seconds = milliseconds(clock.now - start) / 1000
            let result = Result(bytes: bytes, seconds: seconds, megabytesPerSecond: Double(bytes) / 1e6 / max(seconds, 1e-9))
            print(String(decoding: try CanonicalJSON.encode(result), as: UTF8.self))
        }
    }
}
