import ArgumentParser
import Daemon
import Foundation

/// Options shared by the commands that talk to ferryd.
struct DaemonConnection: ParsableArguments {
    @Option(help: "ferryd's control socket.") var socket: String = DaemonConfiguration().socketPath

    func send(_ method: String, _ path: String, body: [UInt8] = []) throws -> ControlResponse {
        let response: ControlResponse
        do {
            response = try ControlHTTP.send(method: method, path: path, body: body, socketPath: socket)
        } catch {
            throw ValidationError("cannot reach ferryd at \(socket) (is it running? `systemctl status ferryd`): \(error)")
        }
        guard (200..<300).contains(response.status) else {
            let message = (try? JSONDecoder().decode([String: String].self, from: Data(response.body)))?["error"]
                ?? String(decoding: response.body, as: UTF8.self)
            throw ValidationError("ferryd: \(message)")
        }
        return response
    }
}

/// `ferry mount IMAGE MOUNTPOINT`
struct MountImage: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mount", abstract: "Mount a Ferry image lazily through ferryd.")
    @Argument(help: "A converted image (oci:DIR[:TAG] or docker://HOST/REPO:TAG).") var image: String
    @Argument(help: "Where to mount it.") var mountpoint: String
    @Option(help: "Kernel backend: auto (what ferryd picked for this kernel), fanotify or fscache.") var backend: String = "auto"
    @Option(help: "fscache: mount in this domain, sharing cached blobs with the domain's other mounts.") var domain: String?
    @Option(help: "Fetch this path (a file, or a directory: every file below) in the background after mounting (repeatable).")
    var prefetch: [String] = []
    @Flag(help: "Fetch the whole image in the background after mounting.") var prefetchAll = false
    @Option(help: ArgumentHelp("This mount's kernel readahead in KiB, instead of ferryd's kernel_readahead_kb (e.g. 32 for an image of programs that start from a few pages of many files).",
                               valueName: "KiB"))
    var kernelReadaheadKb: Int?
    @OptionGroup var daemon: DaemonConnection

    func run() throws {
        try reportingErrors {
            guard ["auto", "fanotify", "fscache"].contains(backend) else { throw ValidationError("--backend must be auto, fanotify or fscache") }
            let target = MountpointPath.normalized(mountpoint, relativeTo: FileManager.default.currentDirectoryPath)
            struct Body: Encodable {
                var image: String, mountpoint: String, backend: String, domain: String?, prefetch: [String], prefetch_all: Bool
                var kernel_readahead_kb: Int?
            }
            let body = try JSONEncoder().encode(Body(image: image, mountpoint: target, backend: backend, domain: domain,
                                                     prefetch: prefetch, prefetch_all: prefetchAll, kernel_readahead_kb: kernelReadaheadKb))
            let response = try daemon.send("POST", "/mounts", body: Array(body))
            let result = try JSONDecoder().decode(FerryDaemon.MountResult.self, from: Data(response.body))
            print("mounted \(image) at \(result.mountpoint) (backend \(result.backend), \(result.devices) blob device(s), image \(result.id.prefix(12)))")
        }
    }
}

/// `ferry umount MOUNTPOINT`
struct UnmountImage: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "umount", abstract: "Unmount a Ferry mount.")
    /// RFC 3986 unreserved characters and '/'.
    static let queryValueCharacters = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")
    @Argument(help: "The mountpoint.") var mountpoint: String
    @OptionGroup var daemon: DaemonConnection

    func run() throws {
        try reportingErrors {
            let target = MountpointPath.normalized(mountpoint, relativeTo: FileManager.default.currentDirectoryPath)
            // A query value: everything but unreserved characters and '/' is escaped ('&', '=',
            // '+', '%', '#', spaces and bytes above ASCII are parts of real paths).
            let encoded = target.addingPercentEncoding(withAllowedCharacters: Self.queryValueCharacters) ?? target
            _ = try daemon.send("DELETE", "/mounts?path=\(encoded)")
            print("unmounted \(target)")
        }
    }
}

/// `ferry status`: a table of the images ferryd serves (what the kernel read, what was fetched,
/// what the cache holds), the cache's state; `--watch` redraws it with rates.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the images ferryd serves, what they fetched and the cache.")
    @Flag(help: "Print JSON (the images only).") var json = false
    @Flag(help: "Redraw every --interval seconds, with read and fetch rates.") var watch = false
    @Option(help: "Seconds between redraws with --watch.") var interval: Double = 2
    @OptionGroup var daemon: DaemonConnection

    func run() throws {
        try reportingErrors {
            if json {
                print(String(decoding: try daemon.send("GET", "/images").body, as: UTF8.self), terminator: "")
                return
            }
            guard watch else {
                print(try StatusTable.render(daemon: daemon, previous: nil).text, terminator: "")
                return
            }
            var previous: StatusTable.Sample?
            while true {
                let (text, sample) = try StatusTable.render(daemon: daemon, previous: previous)
                // Home the cursor and clear the screen, then draw.
                FileHandle.standardOutput.write(Data(("\u{1B}[H\u{1B}[2J" + text).utf8))
                previous = sample
                usleep(UInt32(max(0.2, interval) * 1_000_000))
            }
        }
    }
}

/// The human status view, shared by `status` and `status --watch`.
enum StatusTable {
    struct Sample {
        var at: Date
        var read: [String: Int]
        var fetched: [String: UInt64]
    }

    static func render(daemon: DaemonConnection, previous: Sample?) throws -> (text: String, sample: Sample) {
        let images = try JSONDecoder().decode([FerryDaemon.ImageSummary].self, from: Data(try daemon.send("GET", "/images").body))
        let cache = try? JSONDecoder().decode(FerryDaemon.CacheState.self, from: Data(try daemon.send("GET", "/cache").body))
        let health = (try? JSONSerialization.jsonObject(with: Data(try daemon.send("GET", "/health").body))) as? [String: String]
        let now = Date()
        var out = "ferryd: backend \(health?["backend"] ?? "?"), \(images.count) image(s), \(images.reduce(0) { $0 + $1.mountpoints.count }) mount(s)\n"
        if let cache {
            let used = cache.storeBytes + cache.blobCacheBytes
            out += "cache: \(bytes(used)) used" + (cache.limit.map { " of \(bytes($0)) limit" } ?? " (no limit)")
                + " (store \(bytes(cache.storeBytes)), cache files \(bytes(cache.blobCacheBytes)))"
                + (cache.storeWritesSuspended ? ", DISK FULL: store writes suspended" : "") + "\n"
        }
        out += "\n"
        let rates = previous.map { now.timeIntervalSince($0.at) }.flatMap { $0 > 0 ? $0 : nil }
        var header = ["IMAGE", "SIZE", "READ", "FETCHED", "CACHED", "HITS", "FAILED"]
        if rates != nil { header += ["READ/s", "FETCH/s"] }
        var rows = [header + ["MOUNTS / REFERENCE"]]
        for i in images {
            let chunks = i.cacheHits + i.storeHits + i.chunksVerified
            let hitRatio = chunks == 0 ? "-" : String(format: "%.0f%%", 100 * Double(i.cacheHits + i.storeHits) / Double(chunks))
            var row = [String(i.id.prefix(12)), bytes(i.uncompressedBytes), bytes(UInt64(i.bytesRequested)), bytes(i.bytesFetched),
                       i.cachedBytes.map(bytes) ?? "-", hitRatio, "\(i.chunksFailed)"]
            if let seconds = rates, let previous {
                let read = Double(i.bytesRequested - (previous.read[i.id] ?? i.bytesRequested)) / seconds
                let fetched = Double(i.bytesFetched &- (previous.fetched[i.id] ?? i.bytesFetched)) / seconds
                row += [bytes(UInt64(max(0, read))) + "/s", bytes(UInt64(max(0, fetched))) + "/s"]
            }
            rows.append(row + [(i.mountpoints.isEmpty ? "(not mounted)" : i.mountpoints.joined(separator: ",")) + "  " + i.reference])
        }
        let columns = rows[0].count - 1
        let widths = (0..<columns).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for row in rows {
            out += (0..<columns).map { c in
                let cell = row[c]
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return c == 0 ? cell + pad : pad + cell
            }.joined(separator: "  ") + "  " + (row.last ?? "") + "\n"
        }
        let sample = Sample(at: now, read: Dictionary(images.map { ($0.id, $0.bytesRequested) }, uniquingKeysWith: { a, _ in a }),
                            fetched: Dictionary(images.map { ($0.id, $0.bytesFetched) }, uniquingKeysWith: { a, _ in a }))
        return (out, sample)
    }

    /// 1536 → "1.5 KiB".
    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
    }
}

/// `ferry gc`: evicts cache entries no mounted image needs, down to the cache limit (or a target).
struct CollectGarbage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Evict least recently used cache entries that no mounted image needs.",
        discussion: "Without --target, ferryd evicts down to its cache_limit, or everything unpinned when it has none.")
    @Option(help: "Evict until the caches use at most this much (e.g. 0, 512M, 10G).") var target: String?
    @OptionGroup var daemon: DaemonConnection

    func run() throws {
        try reportingErrors {
            var body: [UInt8] = []
            if let target {
                guard let bytes = parseByteCount(target) else { throw ValidationError("--target \(target) is not a size such as 512M") }
                body = Array(try JSONEncoder().encode(["target": bytes]))
            }
            let report = try JSONDecoder().decode(CacheManager.Report.self, from: Data(try daemon.send("POST", "/gc", body: body).body))
            print("""
                evicted \(report.evictedChunks) store chunk(s) (\(StatusTable.bytes(report.evictedChunkBytes))) and \
                \(report.evictedBlobCaches) cache file(s) (\(StatusTable.bytes(report.evictedBlobCacheBytes))); \
                cache \(StatusTable.bytes(report.bytesBefore)) → \(StatusTable.bytes(report.bytesAfter)), \
                \(StatusTable.bytes(report.pinnedBytes)) pinned by mounted images
                """)
        }
    }
}
