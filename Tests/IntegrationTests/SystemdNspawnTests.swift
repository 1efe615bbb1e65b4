import Foundation
import Testing

/// ferryd with the fanotify backend under a real systemd: boots Debian's systemd 252 as PID 1 in
/// a `systemd-nspawn` container on this machine's own kernel (`Tools/nspawn`; fanotify pre-content
/// hooks need Linux ≥ 6.14, which the 6.1 test VM lacks) and runs `SystemdGuestTests` inside it
/// with `FERRY_SYSTEMD_BACKEND=fanotify` — install, restarts, SIGKILLs, a watchdog kill, an
/// upgrade and a stop under byte-comparing readers, as `SystemdVMTests` does for fscache. The
/// container runs at the host's speed, so it does the issue's counts by default.
///
/// nspawn's own system call filter refuses `fanotify_init` (EPERM, although the container keeps
/// CAP_SYS_ADMIN): the container is started with `--system-call-filter=fanotify_init
/// fanotify_mark`, as a host that runs ferryd in nspawn must (Kernel-Notes/failover.md).
///
/// `FERRY_NSPAWN_ROUNDS` sets how many restarts and how many SIGKILLs (default 10).
@Suite(.serialized) struct SystemdNspawnTests {
    static let tools = RichImage.tools + ["systemd-nspawn", "/lib/systemd/systemd"]

    @Test func fanotifyFerrydUnderSystemdInAContainer() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        let rounds = ProcessInfo.processInfo.environment["FERRY_NSPAWN_ROUNDS"].flatMap(Int.init) ?? 10
        let ws = try Workspace("systemd-nspawn")
        let fixture = ws.sub("fixture")
        let reference = try SystemdVMTests.makeImage(in: fixture)
        try Shell.check([Build.ferry, "convert", "oci:\(fixture)/source:t", "oci:\(fixture)/conv:t", "--chunk-size", "16KiB"])
        // The base mount's image: the same files in blobs of their own (SystemdGuestTests.baseImage).
        try Shell.check([Build.ferry, "convert", "oci:\(fixture)/source:t", "oci:\(fixture)/conv-base:t", "--chunk-size", "32KiB"])
        let out = ws.sub("out")
        let started = Date()
        let result = try Shell.run([
            Build.packageRoot + "/Tools/nspawn", "--timeout", String(600 + 60 * rounds), "--out", out,
            "--bind-ro", fixture, "--bind-ro", Build.binDirectory,
            "--nspawn-arg", "--system-call-filter=fanotify_init fanotify_mark",
            "--env", "FERRY_SYSTEMD_BACKEND=fanotify", "--env", "FERRY_SYSTEMD_BASE_LAYOUT=conv-base:t",
            "--env", "FERRY_SYSTEMD_FIXTURE=\(fixture)", "--env", "FERRY_SYSTEMD_REFERENCE=\(reference)",
            "--env", "FERRY_BIN=\(Build.binDirectory)", "--env", "FERRY_SYSTEMD_ROUNDS=\(rounds)",
            "--", Build.binDirectory + "/FerryPackageTests.xctest", "--testing-library", "swift-testing", "--filter", "SystemdGuestTests",
        ])
        SystemdVMTests.checkGuestRun(result, out: out, name: "systemd-nspawn",
                                     heading: "fanotify, \(rounds) rounds, container run \(String(format: "%.0f", Date().timeIntervalSince(started))) s")
    }
}
