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
    @OptionGroup var daemon: DaemonConnection

    func run() throws {
        try reportingErrors {
            guard ["auto", "fanotify", "fscache"].contains(backend) else { throw ValidationError("--backend must be auto, fanotify or fscache") }
            let target = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
            struct Body: Encodable {
                var image: String, mountpoint: String, backend: String, domain: String?, prefetch: [String], prefetch_all: Bool
            }
            let body = try JSONEncoder().encode(Body(image: image, mountpoint: target, backend: backend, domain: domain,
                                                     prefetch: prefetch, prefetch_all: prefetchAll))
            let response = try daemon.send("POST", "/mounts", body: Array(body))
            let result = try JSONDecoder().decode(FerryDaemon.MountResult.self, from: Data(response.body))
            print("mounted \(image) at \(result.mountpoint) (backend \(result.backend), \(result.devices) blob device(s), image \(result.id.prefix(12)))")
        }
    }
}

/// `ferry umount MOUNTPOINT`
struct UnmountImage: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "umount", abstract: "Unmount a Ferry mount.")
    @Argument(help: "The mountpoint.") var mountpoint: String
    @OptionGroup var daemon: DaemonConnection

    func run() throws {
        try reportingErrors {
            let target = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
            let encoded = target.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? target
            _ = try daemon.send("DELETE", "/mounts?path=\(encoded)")
            print("unmounted \(target)")
        }
    }
}

/// `ferry status`
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the images ferryd serves and what they fetched.")
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var daemon: DaemonConnection

    func run() throws {
        try reportingErrors {
            let response = try daemon.send("GET", "/images")
            if json {
                print(String(decoding: response.body, as: UTF8.self), terminator: "")
                return
            }
            let images = try JSONDecoder().decode([FerryDaemon.ImageSummary].self, from: Data(response.body))
            func row(_ cells: [String]) -> String {
                let widths = [12, 12, 12, 12, 9, 7]
                return zip(cells, widths).map { String(repeating: " ", count: max(0, $1 - $0.count)) + $0 }.joined(separator: " ")
                    + "  " + (cells.last ?? "")
            }
            print(row(["IMAGE", "SIZE", "READ", "FETCHED", "VERIFIED", "FAILED", "MOUNTS"]))
            for i in images {
                print(row([String(i.id.prefix(12)), "\(i.uncompressedBytes)", "\(i.bytesRequested)", "\(i.bytesFetched)",
                           "\(i.chunksVerified)", "\(i.chunksFailed)", i.mountpoints.joined(separator: ",")]))
            }
        }
    }
}
