import Foundation
import Testing

/// ferryd's fscache backend, end to end in the `Tools/vm` guest (Linux 6.1 with
/// `CONFIG_CACHEFILES_ONDEMAND`): the host builds small test images and converts them; the
/// guest starts a real `docker-registry` on its loopback, pushes them, runs ferryd with
/// `--backend fscache` and checks every mount (`FscacheGuestTests`, below). This host-side test
/// fails when the guest fails or times out.
@Suite(.serialized) struct FscacheVMTests {
    static let tools = RichImage.tools + ["qemu-system-x86_64", "docker-registry", "curl", "mkfs.ext4"]

    static var kernelAvailable: String? {
        let shared = Build.packageRoot + "/../shared/kernel/bzImage"
        if FileManager.default.fileExists(atPath: shared) { return nil }
        let cached = (ProcessInfo.processInfo.environment["HOME"] ?? "/root") + "/.cache/ferry-kernel/bzImage"
        if FileManager.default.fileExists(atPath: cached) { return nil }
        return "no test kernel (../shared/kernel/bzImage; Tools/vm can build one, ~15 minutes)"
    }

    @Test func ferrydServesImagesThroughFscacheInTheVM() throws {
        guard integrationPrerequisitesMet(tools: Self.tools) else { return }
        if let missing = Self.kernelAvailable {
            if Build.integrationRequired { Issue.record("\(missing)") } else { print("SKIPPED: \(missing)") }
            return
        }
        let ws = try Workspace("fscache-vm")
        let fixture = try Self.prepareFixture(ws)
        let out = ws.sub("vm-out")
        let xctest = Build.binDirectory + "/FerryPackageTests.xctest"
        let result = try Shell.run([
            Build.packageRoot + "/Tools/vm", "--timeout", "2700", "--memory", "2048", "--out", out,
            "--env", "FERRY_FSCACHE_FIXTURE=\(fixture)", "--env", "FERRY_BIN=\(Build.binDirectory)",
            "--", xctest, "--testing-library", "swift-testing", "--filter", "FscacheGuestTests",
        ])
        let console = (try? String(contentsOfFile: out + "/console.log", encoding: .utf8)) ?? ""
        let figures = (try? String(contentsOfFile: out + "/fscache-figures.txt", encoding: .utf8)) ?? ""
        // Kept after the workspace is gone, for whoever reads a failure.
        try? console.write(toFile: NSTemporaryDirectory() + "ferry-fscache-vm-console.log", atomically: true, encoding: .utf8)
        print("fscache-vm figures:\n\(figures)")
        #expect(result.status == 0, "guest run failed (status \(result.status)):\n\((result.stdout + result.stderr).suffix(2000))\n--- console ---\n\(console.suffix(12000))")
        // The guest suite must really have run (not skipped): it leaves its figures.
        #expect(figures.contains("lazy-read"), "the guest suite left no figures; console:\n\(console.suffix(6000))")
        #expect(console.contains("passed") && !console.contains("SKIPPED"), "guest suite did not pass:\n\(console.suffix(6000))")
    }

    /// Image A (the rich image, small), image B (A plus one layer: shares A's blobs), both
    /// converted at 64 KiB chunks; image C (A at 32 KiB chunks: blobs of its own, to corrupt).
    static func prepareFixture(_ ws: Workspace) throws -> String {
        let image = try RichImage(bigMiB: 2)
        let fixture = ws.sub("fixture")
        try FileManager.default.createDirectory(atPath: fixture, withIntermediateDirectories: true)
        let source = fixture + "/source"
        try Shell.check(["cp", "-a", image.layout, source])
        let extra = ws.sub("extra.tar")
        try Shell.check(["python3", "-c", """
            import io, tarfile
            with tarfile.open('\(extra)', 'w', format=tarfile.PAX_FORMAT) as t:
                data = b''.join(b'b-only line %06d\\n' % i for i in range(20000))
                info = tarfile.TarInfo('opt/b-only'); info.size = len(data); info.mtime = 1700000000
                t.addfile(info, io.BytesIO(data))
            """])
        try Shell.check(["umoci", "tag", "--image", "\(source):t", "b"])
        try Shell.check(["umoci", "raw", "add-layer", "--no-history", "--image", "\(source):b", extra])
        try Shell.check([Build.ferry, "convert", "oci:\(source):t", "oci:\(fixture)/conv-a:t", "--chunk-size", "64KiB"])
        try Shell.check([Build.ferry, "convert", "oci:\(source):b", "oci:\(fixture)/conv-b:t", "--chunk-size", "64KiB"])
        try Shell.check([Build.ferry, "convert", "oci:\(source):t", "oci:\(fixture)/conv-c:t", "--chunk-size", "32KiB"])
        try Shell.check(["chmod", "-R", "a+rX", ws.path])
        return fixture
    }
}
