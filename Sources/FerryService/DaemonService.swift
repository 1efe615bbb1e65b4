public import Daemon
import Dispatch
import FerrySystem
import Foundation
public import Logging

/// ferryd from configuration to shutdown: assembles the daemon, starts it, reports to the
/// service manager, and serves until SIGTERM or SIGINT. Mounts stay when it returns (the kernel
/// keeps them); a restarted ferryd serves them again.
public enum DaemonService {
    public static func run(configuration: DaemonConfiguration, logger: Logger) async throws {
        // A client that goes away before its reply must not take ferryd with it: writes to a
        // closed socket fail with EPIPE instead.
        signal(SIGPIPE, SIG_IGN)
        // Descriptors a service manager passed back (its store), and the link to it, if any.
        let inherited = SystemdListenDescriptors.take()
        let service = SystemdService.fromEnvironment(logger: logger)
        let stop = ShutdownSignal(watching: [SIGTERM, SIGINT])
        let daemon = try DaemonAssembly.make(configuration: configuration, logger: logger, inherited: inherited,
                                             holdGroupInProcess: !service.isActive)
        try await daemon.start()
        if let address = configuration.metricsListen { try MetricsListener.start(address, daemon: daemon, logger: logger) }
        // The backend is bound and the control socket listens: hand the kernel descriptors to
        // the store first (a crash right after READY keeps them), then READY=1.
        service.storeDescriptors(of: daemon.backend)
        service.ready(status: daemon.statusLine())
        service.startHeartbeat(healthProblem: { daemon.healthProblem() }, status: { daemon.statusLine() })
        let signal = await stop.next()
        logger.info("stopping on signal \(signal)")
        service.stopping(status: "finishing requests in flight; mounts stay for the next ferryd")
        daemon.stop()
    }
}

/// The first of a set of signals, awaited: the signals are ignored by default handling from
/// `init` on and delivered through dispatch sources instead.
final class ShutdownSignal {
    private let stream: AsyncStream<Int32>
    private let sources: [any DispatchSourceSignal]

    init(watching signals: [Int32]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        self.stream = stream
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: DispatchQueue(label: "ferryd.signal"))
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
    }

    /// Waits for the next signal.
    func next() async -> Int32 {
        for await number in stream { return number }
        return SIGTERM
    }
}
