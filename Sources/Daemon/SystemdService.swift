public import FerrySystem
import Foundation
public import Logging
import Synchronization

/// ferryd's side of the service manager protocol: descriptor store, readiness, status lines
/// and watchdog pings. Every call is a no-op when ferryd was not started with `$NOTIFY_SOCKET`.
///
/// Order at start (see `Sources/FerryCLI/Daemon.swift`): the backend is bound and the control
/// socket listens → `storeDescriptors` (`FDSTORE=1` per kernel descriptor, so a crash right
/// after start already keeps them) → `ready` (`READY=1`) → `startHeartbeat` (`WATCHDOG=1` every
/// half interval while the backend reports healthy, and `STATUS=` whenever it changes).
public final class SystemdService: Sendable {
    private let notifier: SystemdNotifier?
    /// `$WATCHDOG_USEC`, when the manager asked for pings.
    public let watchdogMicroseconds: UInt64?
    private let logger: Logger
    private let lastStatus = Mutex<String?>(nil)
    private let reportedUnhealthy = Atomic<Bool>(false)

    public init(notifier: SystemdNotifier?, watchdogMicroseconds: UInt64?, logger: Logger) {
        self.notifier = notifier
        self.watchdogMicroseconds = notifier == nil ? nil : watchdogMicroseconds
        self.logger = logger
    }

    /// The link the environment describes (`$NOTIFY_SOCKET`, `$WATCHDOG_USEC`, `$WATCHDOG_PID`).
    public static func fromEnvironment(logger: Logger) -> SystemdService {
        SystemdService(notifier: SystemdNotifier.fromEnvironment(), watchdogMicroseconds: SystemdWatchdog.intervalFromEnvironment(),
                       logger: logger)
    }

    /// Whether a service manager listens (ferryd then relies on its descriptor store).
    public var isActive: Bool { notifier != nil }

    /// Hands each of the backend's kernel descriptors to the descriptor store, one message per
    /// name (`FDNAME` applies to every descriptor of its message). `FDPOLL=0`: the store must
    /// not drop a fanotify group because it polls readable or errors.
    public func storeDescriptors(of backend: any KernelBackend) {
        guard let notifier, let handing = backend as? any HandsOverDescriptors else { return }
        for (name, fd) in handing.descriptorsToKeep {
            do {
                try notifier.notify(["FDSTORE=1", "FDNAME=\(name)", "FDPOLL=0"], descriptors: [fd])
                logger.info("kernel descriptor handed to the service manager's store", metadata: ["name": "\(name)"])
            } catch {
                logger.error("cannot store descriptor with the service manager (is FileDescriptorStoreMax= set?)",
                             metadata: ["name": "\(name)", "error": "\(error)"])
            }
        }
    }

    /// `READY=1` with a first status line.
    public func ready(status: String) {
        lastStatus.withLock { $0 = status }
        send(["READY=1", "STATUS=\(status)", "MAINPID=\(ProcessInfoRaw.pid)"])
    }

    /// `STATUS=…`, sent only when it differs from the last one.
    public func status(_ text: String) {
        let changed = lastStatus.withLock { last -> Bool in
            defer { last = text }
            return last != text
        }
        if changed { send(["STATUS=\(text)"]) }
    }

    /// `STOPPING=1` before a graceful stop.
    public func stopping(status: String) { send(["STOPPING=1", "STATUS=\(status)"]) }

    /// Starts the task that pings the watchdog (every half `WatchdogSec`) while `healthProblem`
    /// returns nil, and refreshes the status line every second (sent only when it changed, so
    /// `systemctl status` shows a new mount within a second). A task, not a thread of its own: if
    /// ferryd's tasks stop running (the cooperative pool blocked), the pings stop too and the
    /// service manager restarts ferryd, as a watchdog should.
    public func startHeartbeat(healthProblem: @escaping @Sendable () -> String?, status: @escaping @Sendable () -> String) {
        guard notifier != nil else { return }
        let pingInterval = watchdogMicroseconds.map { max(10_000, $0 / 2) }
        let tick = min(pingInterval ?? 1_000_000, 1_000_000)
        Task.detached { [self] in
            var sincePing: UInt64 = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .microseconds(tick))
                sincePing += tick
                if let pingInterval, sincePing >= pingInterval {
                    sincePing = 0
                    beat(healthProblem: healthProblem())
                }
                self.status(status())
            }
        }
    }

    /// One heartbeat: `WATCHDOG=1` when healthy; when not, no ping (the manager restarts
    /// ferryd once the interval passes) and one log line per episode.
    func beat(healthProblem: String?) {
        guard watchdogMicroseconds != nil else { return }
        if let healthProblem {
            if !reportedUnhealthy.exchange(true, ordering: .relaxed) {
                logger.critical("not pinging the watchdog: \(healthProblem)")
                send(["STATUS=unhealthy: \(healthProblem)"])
            }
            return
        }
        if reportedUnhealthy.exchange(false, ordering: .relaxed) { logger.notice("healthy again, watchdog pings resume") }
        send(["WATCHDOG=1"])
    }

    private func send(_ assignments: [String]) {
        guard let notifier else { return }
        do { try notifier.notify(assignments) } catch {
            logger.warning("cannot notify the service manager", metadata: ["error": "\(error)"])
        }
    }
}
