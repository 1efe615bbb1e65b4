import Foundation
import Testing

/// ferryd under a real systemd: boots the `Tools/vm --systemd` guest (Debian's systemd 252 as
/// PID 1 on Linux 6.1) and runs `SystemdGuestTests` inside it — ferryd installed with
/// `ferry install-service`, the fscache backend, restarts, SIGKILLs, a watchdog kill, an upgrade
/// and a stop under byte-comparing readers. The host builds a small image (`makeImage`) and converts it; the guest
/// reads the fixture and the reference tree over the shared root. Prints the guest's figures.
///
/// `FERRY_SYSTEMD_ROUNDS` sets how many restarts and how many SIGKILLs (default 10; `Tools/test`
/// runs fewer to fit CI's budget).
@Suite(.serialized) struct SystemdVMTests {
    static let tools = RichImage.tools + ["qemu-system-x86_64", "mkfs.ext4", "/lib/systemd/systemd"]

    /// A small image the readers go through many times under TCG: 12 files, 1.5 MB — four of
    /// 256 KiB of random bytes (incompressible, 16 chunks each at 16 KiB), four of 128 KiB of text, four
    /// small ones, in two layers. Returns the reference tree (`umoci unpack`).
    static func makeImage(in fixture: String) throws -> String {
        try FileManager.default.createDirectory(atPath: fixture, withIntermediateDirectories: true)
        try Shell.check(["python3", "-c", """
            import io, random, tarfile
            rng = random.Random(17)
            def layer(path, files):
                with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as t:
                    for name, data in files:
                        info = tarfile.TarInfo(name); info.size = len(data); info.mtime = 1700000000; info.mode = 0o644
                        t.addfile(info, io.BytesIO(data))
            layer('\(fixture)/l1.tar', [('data/random-%d.bin' % i, rng.randbytes(256 << 10)) for i in range(4)]
                  + [('etc/small-%d.conf' % i, b'key%d = value\\n' % i * (i * 40 + 1)) for i in range(4)])
            layer('\(fixture)/l2.tar', [('usr/share/text-%d.txt' % i, b''.join(b'line %d of text file %d\\n' % (n, i) for n in range(6000))[: 128 << 10]) for i in range(4)])
            """])
        try Shell.check(["umoci", "init", "--layout", "\(fixture)/source"])
        try Shell.check(["umoci", "new", "--image", "\(fixture)/source:t"])
        for layer in ["l1", "l2"] {
            try Shell.check(["umoci", "raw", "add-layer", "--no-history", "--image", "\(fixture)/source:t", "\(fixture)/\(layer).tar"])
        }
        try Shell.check(["umoci", "unpack", "--image", "\(fixture)/source:t", "\(fixture)/bundle"])
        return fixture + "/bundle/rootfs"
    }

    @Test func ferrydUnderSystemdInTheVM() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        if let missing = FscacheVMTests.kernelAvailable {
            if Build.integrationRequired { Issue.record("\(missing)") } else { print("SKIPPED: \(missing)") }
            return
        }
        let rounds = ProcessInfo.processInfo.environment["FERRY_SYSTEMD_ROUNDS"].flatMap(Int.init) ?? 10
        let ws = try Workspace("systemd-vm")
        let fixture = ws.sub("fixture")
        let reference = try Self.makeImage(in: fixture)
        try Shell.check([Build.ferry, "convert", "oci:\(fixture)/source:t", "oci:\(fixture)/conv:t", "--chunk-size", "16KiB"])
        try Shell.check(["chmod", "-R", "a+rX", ws.path])
        let out = ws.sub("vm-out")
        let started = Date()
        let result = try Shell.run([
            Build.packageRoot + "/Tools/vm", "--systemd", "--timeout", String(900 + 240 * rounds), "--memory", "2048", "--out", out,
            "--env", "FERRY_SYSTEMD_FIXTURE=\(fixture)", "--env", "FERRY_SYSTEMD_REFERENCE=\(reference)",
            "--env", "FERRY_BIN=\(Build.binDirectory)", "--env", "FERRY_SYSTEMD_ROUNDS=\(rounds)",
            "--", Build.binDirectory + "/FerryPackageTests.xctest", "--testing-library", "swift-testing", "--filter", "SystemdGuestTests",
        ])
        Self.checkGuestRun(result, out: out, name: "systemd-vm", heading: "\(rounds) rounds, guest run \(String(format: "%.0f", Date().timeIntervalSince(started))) s")
    }

    /// What a run of `SystemdGuestTests` under systemd (`Tools/vm --systemd` or `Tools/nspawn`)
    /// left in `out`: keeps its console, journal and figures as `$TMPDIR/NAME-*` after the
    /// workspace is gone, prints the figures under "NAME figures (HEADING):", and expects the run
    /// to have passed — really run, not skipped: the guest suite leaves its figures.
    static func checkGuestRun(_ result: Shell.Result, out: String, name: String, heading: String) {
        let console = (try? String(contentsOfFile: out + "/console.log", encoding: .utf8)) ?? ""
        let figures = (try? String(contentsOfFile: out + "/systemd-figures.txt", encoding: .utf8)) ?? ""
        for file in ["console.log", "journal.log", "systemd-figures.txt"] {
            try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "ferry-\(name)-" + file)
            try? FileManager.default.copyItem(atPath: out + "/" + file, toPath: NSTemporaryDirectory() + "ferry-\(name)-" + file)
        }
        print("\(name) figures (\(heading)):\n\(figures)")
        #expect(result.status == 0, "\(name) run failed (status \(result.status)):\n\((result.stdout + result.stderr).suffix(2000))\n--- console ---\n\(console.suffix(12000))")
        #expect(figures.contains("readers across"), "the guest suite left no figures; console:\n\(console.suffix(6000))")
        #expect(console.contains("passed") && !console.contains("SKIPPED"), "guest suite did not pass:\n\(console.suffix(6000))")
    }
}
