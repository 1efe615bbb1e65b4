import ArgumentParser
import Foundation

/// `ferry install-service`: writes ferryd's systemd unit (Tools/systemd/ferryd.service, embedded
/// below byte for byte; a test keeps the two equal) with `ExecStart=` naming the installed ferryd,
/// then runs `systemctl daemon-reload`.
struct InstallService: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install-service",
        abstract: "Install ferryd's systemd unit (Type=notify, watchdog, restart without unmounting).")
    @Option(help: "The ferryd executable the unit starts (default: the ferryd beside this ferry).") var ferryd: String?
    @Option(help: "Where to write ferryd.service.") var unitDirectory: String = "/etc/systemd/system"
    @Flag(help: "Print the unit instead of installing it.") var print = false
    @Flag(help: "Do not run `systemctl daemon-reload`.") var noReload = false

    func run() throws {
        try reportingErrors {
            let executable = ferryd ?? Self.siblingFerryd()
            guard FileManager.default.isExecutableFile(atPath: executable) else {
                throw ValidationError("\(executable) is not an executable ferryd (pass --ferryd PATH)")
            }
            let unit = Self.unit(ferryd: executable)
            if print {
                Swift.print(unit, terminator: "")
                return
            }
            let path = unitDirectory + "/ferryd.service"
            try FileManager.default.createDirectory(atPath: unitDirectory, withIntermediateDirectories: true)
            try Data(unit.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
            Swift.print("wrote \(path) (ExecStart=\(executable))")
            // Only when systemd runs this machine (sd_booted(3): /run/systemd/system exists).
            if !noReload, FileManager.default.fileExists(atPath: "/run/systemd/system") {
                let reload = Process()
                reload.executableURL = URL(fileURLWithPath: "/bin/systemctl")
                reload.arguments = ["daemon-reload"]
                try reload.run()
                reload.waitUntilExit()
                guard reload.terminationStatus == 0 else { throw ValidationError("systemctl daemon-reload failed") }
                Swift.print("systemd reloaded; start it with: systemctl enable --now ferryd")
            } else {
                Swift.print("systemd is not running here; on the target: systemctl daemon-reload && systemctl enable --now ferryd")
            }
        }
    }

    static func siblingFerryd() -> String {
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let beside = me.deletingLastPathComponent().appendingPathComponent("ferryd").path
        return FileManager.default.isExecutableFile(atPath: beside) ? beside : "/usr/local/bin/ferryd"
    }

    /// The unit with `ExecStart=` pointing at `ferryd`.
    static func unit(ferryd: String) -> String {
        template.replacingOccurrences(of: "ExecStart=/usr/local/bin/ferryd", with: "ExecStart=\(ferryd)")
    }

    /// Tools/systemd/ferryd.service.
    static let template = """
# ferryd: serves Ferry images to the kernel lazily. Install with `ferry install-service`
# (writes this unit with ExecStart= pointing at the installed ferryd, then daemon-reload).
#
# Restarts and upgrades never unmount anything: ferryd hands the kernel descriptor of its
# backend (the fanotify group, or /dev/cachefiles) to systemd's descriptor store (FDSTORE=1)
# and takes it back from LISTEN_FDS when it starts again; mounts are re-attached from
# /var/lib/ferry/mounts.json. Upgrade: replace the binary, then `systemctl restart ferryd`.
# systemd before 254 empties the descriptor store on `systemctl stop`: so the first ferryd also
# hands the descriptor to a transient unit of its own (ferryd-fanotify-holder.service or
# ferryd-cachefiles-holder.service, via systemd-run), which a stop leaves running; readers wait
# until the next start. To let go of everything: unmount, then stop ferryd and that unit.
#
# Deliberately absent: every directive that gives the service its own mount namespace
# (ProtectSystem=, ProtectHome=, PrivateTmp=, PrivateDevices=, PrivateMounts=, ReadWritePaths=,
# ProtectKernelTunables=, ProtectKernelModules=, ProtectKernelLogs=, ProtectControlGroups=,
# TemporaryFileSystem=, BindPaths=). ferryd's job is to mount images where containers see them;
# in a private namespace its mounts would be invisible to the rest of the system. Also absent:
# DevicePolicy=/DeviceAllow= and ProtectClock= (a device allow-list would have to name
# /dev/cachefiles and the loop devices, and is easy to get wrong across kernels).

[Unit]
Description=Ferry lazy image daemon (ferryd)
Documentation=https://github.com/ferry/ferry#running-as-a-service
# Mounts of images in a registry need the network; local layouts do not.
After=network-online.target local-fs.target
Wants=network-online.target
# Never give up restarting: containers are reading through ferryd's mounts.
StartLimitIntervalSec=0

[Service]
# ferryd sends READY=1 once the kernel interface is bound and the control socket listens.
Type=notify
# Only ferryd itself (not the group-holder helper) may send notifications.
NotifyAccess=main
ExecStart=/usr/local/bin/ferryd
# The watchdog: ferryd pings every WatchdogSec/2 while its kernel event loop turns; a stuck loop
# stops the pings and systemd restarts it (a watchdog timeout counts as a failure).
WatchdogSec=30s
# On a watchdog timeout systemd sends SIGABRT; a ferryd that cannot take it (stopped, or stuck in
# the kernel) is SIGKILLed only after TimeoutAbortSec, by default TimeoutStopSec (30 s), while
# readers wait: 10 s bounds that (measured under systemd 252: Kernel-Notes/failover.md).
TimeoutAbortSec=10s
# Crashes, SIGKILL and watchdog timeouts restart ferryd; a clean SIGTERM exit does not.
Restart=on-failure
# Readers of lazily mounted files block while no ferryd runs: restart at once.
RestartSec=100ms
# Room for the kernel descriptors ferryd stores (one fanotify group or one /dev/cachefiles fd,
# a few spare for future backends). 0 would silently disable restart without unmounting.
FileDescriptorStoreMax=16
# SIGTERM makes ferryd stop reading kernel requests (queued ones wait for the next ferryd) and
# answer the ones in flight, for up to 20 s; then systemd may SIGKILL.
TimeoutStopSec=30s
# Bootstraps, cache files and the chunk store live in /var/lib/ferry (created 0700).
StateDirectory=ferry
StateDirectoryMode=0700
# The control socket /run/ferry/ferryd.sock; kept between restarts.
RuntimeDirectory=ferry
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
# Log lines go to stderr, which systemd forwards to the journal.
StandardOutput=journal
StandardError=journal
# Each lazily read file and every cache file is a descriptor.
LimitNOFILE=65536
# The kernel waits on ferryd for every read of a mounted image: keep it out of the OOM killer's way.
OOMScoreAdjust=-900

# Hardening that leaves what ferryd needs: CAP_SYS_ADMIN (mount(2), fanotify_init with
# FAN_CLASS_PRE_CONTENT, binding /dev/cachefiles), CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
# (cache files and mountpoints owned by others), CAP_CHOWN and CAP_FOWNER (cache files that
# cachefiles created); nothing else.
CapabilityBoundingSet=CAP_SYS_ADMIN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_CHOWN CAP_FOWNER
# No setuid binaries or file capabilities can raise ferryd's privileges.
NoNewPrivileges=yes
# Control socket (AF_UNIX), registries and peers (AF_INET, AF_INET6); nothing else.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# ferryd creates no namespaces.
RestrictNamespaces=yes
# No realtime scheduling, no setuid/setgid files, no personality changes.
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# Swift code needs no writable-and-executable memory.
MemoryDenyWriteExecute=yes
# Only native system calls (no x32 / i386 ABI).
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target

"""
}
