import ContainerdSnapshotter
public import Daemon
import FerrySystem
import Foundation
public import Logging
import Dispatch
import ServiceLifecycle

/// ferryd from configuration to shutdown.
///
/// Start-up is sequential, because readiness has an order: the kernel backend is bound and the
/// previous ferryd's mounts are re-attached, the control socket listens, the snapshotter socket
/// and the metrics port are bound, the kernel descriptors go to the service manager's store,
/// and only then READY=1. Serving is a `ServiceGroup` (swift-service-lifecycle): each listener and
/// the watchdog is a service; SIGTERM or SIGINT shuts them down in reverse order, and the
/// kernel backend stops last. Mounts stay (the kernel keeps them); the next ferryd serves them.
public enum DaemonService {
    public static func run(configuration: DaemonConfiguration, logger: Logger) async throws {
        // A client that goes away before its reply must not take ferryd with it: writes to a
        // closed socket fail with EPIPE instead.
        signal(SIGPIPE, SIG_IGN)
        let openFiles = ProcessLimits.raiseOpenFileLimit()
        logger.debug("open file limit", metadata: ["soft": "\(openFiles)"])
        // Descriptors a service manager passed back (its store), and the link to it, if any.
        let inherited = SystemdListenDescriptors.take()
        let systemd = SystemdService.fromEnvironment(logger: logger)
        let daemon = try await DaemonAssembly.make(configuration: configuration, logger: logger, inherited: inherited,
                                             underServiceManager: systemd.isActive)
        try await daemon.start()
        var services: [any Service] = [KernelBackendService(daemon: daemon)]
        if case let socket = configuration.snapshotterSocketPath, !socket.isEmpty {
            let snapshotter = try Snapshotter(root: configuration.stateDirectory + "/snapshotter", lazy: DaemonLazyMounts(daemon: daemon),
                                              logger: logger)
            let server = try SnapshotterServer(socketPath: socket, snapshotter: snapshotter, logger: logger)
            logger.info("containerd snapshotter listening", metadata: ["socket": "\(socket)"])
            services.append(SnapshotterService(server: server))
        }
        if let address = configuration.metricsListen { try await MetricsListener.start(address, daemon: daemon, logger: logger) }
        // The backend is bound and the sockets listen: hand the kernel descriptors to the store
        // first (a crash right after READY keeps them), then READY=1.
        systemd.storeDescriptors(of: daemon.backend)
        systemd.ready(status: daemon.statusLine())
        systemd.startHeartbeat(healthProblem: { daemon.healthProblem() }, status: { daemon.statusLine() })
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services.map {
                .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)
            },
            logger: logger))
        // SIGTERM and SIGINT stop the kernel backend at once, from the signal's own dispatch
        // queue, and end the process: the successor takes the kernel's queue over (`restore` for
        // cachefiles, the held group for fanotify) as it does after a crash, and mounts stay.
        // A graceful wind-down was tried and reverted: left to the group's signal handling (a
        // task) the backend stopped 13 s late in the TCG guest while the successor already took
        // requests; stopped at once but with the process living on while the other services wound
        // down, readers of the fscache guest still stranded in one SIGTERM round of two
        // (FscacheGuestTests). Nothing else needs an orderly end: containerd reconnects to the
        // snapshotter, clients retry the control socket, and state files are written atomically.
        let signals = [SIGTERM, SIGINT].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: DispatchQueue(label: "ferryd.signal"))
            source.setEventHandler {
                logger.info("stopping on signal \(number); mounts stay for the next ferryd")
                systemd.stopping(status: "mounts stay for the next ferryd")
                daemon.stop()
                exit(0)
            }
            source.resume()
            return source
        }
        try await group.run()
        // The sources must outlive the group, or the signals go back to being ignored unseen.
        withExtendedLifetime(signals) {}
        logger.info("ferryd stopped")
    }
}

/// The kernel backend and the control API: serves until shutdown, then stops both (requests in
/// flight are answered first). First in the group, so it stops last.
struct KernelBackendService: Service {
    let daemon: FerryDaemon

    func run() async throws {
        try? await gracefulShutdown()
        // Stopped already when a signal asked for it; otherwise (another service ended) here.
        daemon.stop()
    }
}

/// containerd's snapshots API until shutdown.
struct SnapshotterService: Service {
    let server: SnapshotterServer

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            server.stop()
        }
    }
}

/// The snapshotter's lazy mounts are ferryd's own mounts.
struct DaemonLazyMounts: LazyImageMounts {
    let daemon: FerryDaemon

    func mountImage(_ reference: String, at mountpoint: String) async throws -> String? {
        try await daemon.mount(image: reference, at: mountpoint).bootstrap
    }

    func unmountImage(at mountpoint: String) async throws { try await daemon.unmount(mountpoint) }

    func hasMount(at mountpoint: String) -> Bool { daemon.hasMount(at: mountpoint) }
}
