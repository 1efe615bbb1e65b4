import ArgumentParser
import Blob
import Daemon
import FerryService
import FerrySystem
import Foundation
import KernelBackends
import Logging
import OCI
import Registry

/// The `ferryd` command line: flags on top of the configuration file.
struct FerryDaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferryd",
        abstract: "Serve Ferry images to the kernel lazily (fanotify pre-content or cachefiles on demand).")

    @Option(help: "JSON configuration file (default /etc/ferry/ferryd.json when present).") var config: String?
    @Option(help: "State directory for bootstraps, cache files and the chunk store.") var stateDir: String?
    @Option(help: "Control API socket.") var socket: String?
    @Option(help: "Kernel backend: auto, fanotify or fscache.") var backend: String?
    @Option(help: "Log level (trace … critical).") var logLevel: String?
    @Option(name: .customLong("plain-http"), help: "Registry host[:port] reached over plain HTTP (repeatable).") var plainHTTP: [String] = []
    @Option(help: "Bytes the chunk store and cache files of unmounted images may use (e.g. 20G, 512M).") var cacheLimit: String?
    @Option(help: "Also serve the Prometheus metrics over TCP at HOST:PORT (e.g. 127.0.0.1:9797).") var metricsListen: String?
    @Option(help: "Serve containerd's snapshots API on this Unix socket (\"\" for none; default: containerd-snapshotter.sock beside --socket).")
    var containerdSnapshotterSocket: String?

    init() {}

    func run() async throws {
        var configuration = DaemonConfiguration()
        let configPath = config ?? (FileManager.default.fileExists(atPath: "/etc/ferry/ferryd.json") ? "/etc/ferry/ferryd.json" : nil)
        do {
            if let configPath { configuration = try DaemonConfiguration.load(path: configPath) }
        } catch {
            FileHandle.standardError.write(Data("ferryd: \(error)\n".utf8))
            throw ExitCode.failure
        }
        if let stateDir { configuration.stateDirectory = stateDir }
        if let socket { configuration.socketPath = socket }
        if let backend { configuration.backend = backend }
        if let logLevel { configuration.logLevel = logLevel }
        configuration.plainHTTP += plainHTTP
        if let cacheLimit {
            guard let bytes = parseByteCount(cacheLimit) else {
                FileHandle.standardError.write(Data("ferryd: --cache-limit \(cacheLimit) is not a size such as 512M or 20G\n".utf8))
                throw ExitCode.failure
            }
            configuration.cacheLimit = bytes
        }
        if let metricsListen { configuration.metricsListen = metricsListen }
        if let containerdSnapshotterSocket { configuration.containerdSnapshotterSocket = containerdSnapshotterSocket }
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "ferryd")
        do {
            try await DaemonService.run(configuration: configuration, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode.failure
        }
    }
}

/// Entry point of the `ferryd` executable (`ferryd hold-group` runs the fanotify group holder).
public func runFerryDaemon() async {
    let arguments = CommandLine.arguments
    if arguments.count == 4, arguments[1] == "hold-group", arguments[2] == "--socket" {
        signal(SIGHUP, SIG_IGN)
        do { try FanotifyGroupHolder.serve(socketPath: arguments[3]) } catch {
            FileHandle.standardError.write(Data("ferryd hold-group: \(error)\n".utf8))
            exit(1)
        }
    }
    await FerryDaemonCommand.main()
}

