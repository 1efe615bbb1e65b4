import Foundation
import Testing

/// Ferry's layer merge against the layers real builders write and the trees `umoci unpack` and
/// containerd (its native snapshotter) make of them. Where the two disagree Ferry follows
/// containerd; Kernel-Notes/layers.md lists the rules and every difference the tests allow.
@Suite(.serialized) struct LayerStackTests {
    /// containerd started in `ws` for the comparison, or nil (with the reason printed, or a
    /// failure under FERRY_REQUIRE_INTEGRATION) where containerd or ctr is not installed.
    static func containerd(in ws: Workspace) throws -> NativeContainerd? {
        if let missing = Build.missingPrerequisite(tools: NativeContainerd.tools) {
            if Build.integrationRequired {
                Issue.record("integration prerequisite missing in CI: \(missing)")
            } else {
                print("containerd comparison SKIPPED: \(missing)")
            }
            return nil
        }
        return try NativeContainerd(workspace: ws)
    }

    /// Issue #19: umoci repack writes a directory replaced by a file as the file followed by
    /// whiteouts of the directory's old children (`deep/.wh.d00`); Ferry refused the layer.
    @Test func umociDirectoryReplacedByFileConvertsAndMountsEqual() throws {
        guard integrationPrerequisitesMet(tools: LayerStackHarness.tools) else { return }
        let ws = try Workspace("umoci-dir-to-file")
        let containerd = try Self.containerd(in: ws)
        let stack: [[LayerChange]] = [
            [.directory("deep"), .directory("deep/d00"), .file("deep/d00/x", size: 3, fill: 1, holeAt: nil),
             .file("deep/f", size: 2, fill: 2, holeAt: nil), .directory("keep")],
            [.remove("deep"), .file("deep", size: 5, fill: 3, holeAt: nil)],
            [.file("keep/late", size: 7, fill: 4, holeAt: nil)],
        ]
        var harness = LayerStackHarness(directory: ws.sub("stack"))
        harness.containerd = containerd
        var whiteouts: [String] = []
        let outcome = harness.replay(stack, variants: [.dockerArchive, .mixedCompression]) { image in
            // The test is only worth something if umoci really wrote whiteouts below the file.
            let listing = try Shell.check(["sh", "-c", "for b in '\(image)'/blobs/sha256/*; do tar -tzf \"$b\" 2>/dev/null; done; true"])
            whiteouts = listing.split(separator: "\n").map(String.init).filter { $0.contains(".wh.") }
        }
        #expect(outcome.failure == nil, "\(outcome.failure ?? "")")
        #expect(outcome.differences.isEmpty, "\n\(outcome.summary)")
        #expect(Set(whiteouts) == ["deep/.wh.d00", "deep/.wh.f"], "umoci wrote \(whiteouts)")
        // containerd refuses all three forms ("mkparent …: not a directory"); Ferry converts
        // them to umoci's tree (the documented difference).
        if containerd != nil { #expect(outcome.containerdCompared == 3 && outcome.containerdRefused == 3, "\(outcome)") }
    }

    /// Sparse files as GNU tar writes them: old GNU 'S' headers and PAX 0.0, 0.1 and 1.0, each
    /// archive of the same files its own image. umoci unpacks the PAX ones (Go's archive/tar
    /// turns them into regular files); it refuses 'S' entries ("unknown typeflag", as containerd
    /// does), so the 'S' image is compared with umoci's unpack of the 1.0 one.
    @Test func gnuTarSparseFormatsEqualUmociUnpack() throws {
        guard integrationPrerequisitesMet(tools: LayerStackHarness.tools + ["tar", "truncate", "dd"]) else { return }
        let ws = try Workspace("sparse-formats")
        let src = ws.sub("src")
        try FileManager.default.createDirectory(atPath: src + "/d", withIntermediateDirectories: true)
        // Data islands in a 5 MiB file (one at the very end), a file that is all hole, one that
        // starts with data; whole-second mtimes, which every format keeps exactly.
        try Shell.check(["sh", "-c", """
            cd '\(src)/d' && truncate -s 5M islands && printf 'abc' | dd of=islands bs=1 seek=1000000 conv=notrunc 2>/dev/null \
            && head -c 70000 /dev/urandom | dd of=islands bs=4096 seek=700 conv=notrunc 2>/dev/null \
            && printf 'end' | dd of=islands bs=1 seek=5242877 conv=notrunc 2>/dev/null \
            && truncate -s 3M hole && head -c 9000 /dev/urandom > head && truncate -s 2M head \
            && find '\(src)' -exec touch -h -d @1600000000 {} +
            """])
        let formats = [("v10", ["--format=posix", "--sparse-version=1.0"]), ("v00", ["--format=posix", "--sparse-version=0.0"]),
                       ("v01", ["--format=posix", "--sparse-version=0.1"]), ("gnu", ["--format=gnu"])]
        for (name, format) in formats {
            let tar = ws.sub("\(name).tar"), image = ws.sub(name)
            try Shell.check(["tar", "--sparse"] + format + ["-cf", tar, "-C", src, "."])
            // The test means something only if tar really stored the files sparse.
            let size = try #require(try FileManager.default.attributesOfItem(atPath: tar)[.size] as? Int)
            #expect(size < 1 << 20, "\(format): tar wrote \(size) bytes, not sparse")
            try Shell.check(["umoci", "init", "--layout", image])
            try Shell.check(["umoci", "new", "--image", image + ":t"])
            try Shell.check(["umoci", "raw", "add-layer", "--no-history", "--image", image + ":t", tar])
            if name == "v10" { try Shell.check(["umoci", "unpack", "--image", image + ":t", ws.sub("ref")]) }
            let differences = try LayerStackHarness(directory: ws.sub("convert-" + name)).compare(input: "oci:\(image):t", reference: ws.sub("ref/rootfs"))
            #expect(differences.isEmpty, "\(name):\n\(differences.joined(separator: "\n"))")
        }
        // What the runtimes do with the 'S' image: refuse it.
        let refused = try Shell.run(["umoci", "unpack", "--image", ws.sub("gnu") + ":t", ws.sub("ref-gnu")])
        #expect(refused.status != 0 && refused.stderr.contains("typeflag"), "umoci now unpacks old GNU sparse entries: \(refused.stderr)")
    }

    /// Fixed stacks: shrunk failures of the random test go here, and cases worth pinning.
    static let regressions: [[[LayerChange]]] = [
        // umoci repack writes a directory replaced by a symlink as `d -> t` plus `d/.wh.x`;
        // every unpacker follows the symlink and removes `t/x` (umoci and containerd resolve
        // the whiteout's parent path), and so does Ferry.
        [[.directory("t"), .file("t/x", size: 1, fill: 1, holeAt: nil), .directory("d"), .file("d/x", size: 1, fill: 2, holeAt: nil)],
         [.remove("d"), .symlink("d", target: "t")]],
        // Found by Tools/fuzz-layers (seed 7): a directory replaced by a dangling absolute
        // symlink; umoci's whiteout below it creates nothing in umoci, an empty /usr in
        // containerd and Ferry (the allowed difference).
        [[.directory("etc"), .file("etc/x y", size: 5784, fill: 31, holeAt: nil)], [.symlink("etc", target: "/usr")]],
        // Found by Tools/fuzz-layers (seed 7): a directory replaced by a symlink to itself; the
        // whiteout below it loops, umoci unpack and Ferry both refuse the image.
        [[.directory(".hidden"), .file(".hidden/ünï", size: 2751, fill: 1, holeAt: nil)], [.symlink(".hidden", target: ".hidden")]],
        // Found by the containerd comparison: containerd never sets trusted.* xattrs, makes
        // mtimes before 1970 the epoch and ignores the root entry ("./"); umoci keeps all three
        // and Ferry did too.
        [[.file("old", size: 10, fill: 1, holeAt: nil), .mtime("old", seconds: -86_400 * 400),
          .xattr("old", name: "trusted.ferry", value: "v"), .xattr("old", name: "user.a", value: "w"),
          .directory("d"), .xattr("d", name: "trusted.ferry", value: "v"), .chmod("", 0o700), .chown("", uid: 5, gid: 6)]],
        // A directory's xattr removed by a later layer: containerd's naive applier (the native
        // snapshotter) keeps it, umoci and Ferry (and the overlay applier) do not; allowed.
        [[.directory("d"), .xattr("d", name: "user.a", value: "v"), .file("d/x", size: 3, fill: 2, holeAt: nil)],
         [.xattr("d", name: "user.a", value: nil)]],
        // Found by the containerd comparison (seed 7): umoci repack writes `usr -> /` and then
        // `usr/.wh.usr`, which resolves to the new symlink itself. containerd's naive applier
        // removes it, the overlay applier refuses the layer, umoci and Ferry keep it (allowed).
        [[.directory("usr"), .file("usr/usr", size: 2825, fill: 24, holeAt: nil)], [.symlink("usr", target: "/")]],
    ]

    @Test(arguments: regressions.indices)
    func shrunkStackEqualsUmociUnpack(_ index: Int) throws {
        guard integrationPrerequisitesMet(tools: LayerStackHarness.tools) else { return }
        let ws = try Workspace("layer-regression")
        var harness = LayerStackHarness(directory: ws.sub("stack"))
        harness.containerd = try Self.containerd(in: ws)
        let outcome = harness.replay(Self.regressions[index])
        #expect(outcome.failure == nil, "\(outcome.failure ?? "")")
        #expect(outcome.differences.isEmpty, "\n\(outcome.summary)")
    }

    /// The differential test: `FERRY_LAYER_STACKS` (default 200) random stacks from
    /// `FERRY_LAYER_SEED` (default 19), or as many as fit in `FERRY_LAYER_SECONDS`, on
    /// `FERRY_LAYER_JOBS` workers (default 2). Every eighth stack also goes through
    /// `docker-archive:`, another eighth through mixed gzip/zstd/uncompressed layers, and every
    /// sixteenth is built by buildah instead of umoci. With `FERRY_LAYER_CONTAINERD_EVERY` = N
    /// (default 0: none; CI compares with containerd in the next test, so this one stays within
    /// its 3 minutes) every Nth stack and every buildah stack is also compared with containerd's
    /// unpack of its last form. Failures are shrunk and printed as replayable Swift.
    @Test func randomLayerStacksEqualUmociUnpack() throws {
        let env = ProcessInfo.processInfo.environment
        try Self.runRandomStacks(seed: env["FERRY_LAYER_SEED"].flatMap { UInt64($0) } ?? 19,
                                 stacks: env["FERRY_LAYER_STACKS"].flatMap { Int($0) },
                                 containerdEvery: max(0, env["FERRY_LAYER_CONTAINERD_EVERY"].flatMap { Int($0) } ?? 0))
    }

    /// The same generator, other stacks (seed 20), each also compared with containerd's own
    /// unpack (its native snapshotter): `FERRY_LAYER_CONTAINERD_STACKS` of them (default 40).
    @Test func randomLayerStacksEqualContainerdUnpack() throws {
        let env = ProcessInfo.processInfo.environment
        try Self.runRandomStacks(seed: 20, stacks: env["FERRY_LAYER_CONTAINERD_STACKS"].flatMap { Int($0) } ?? 40, containerdEvery: 1)
    }

    /// Runs `stacks` random stacks (nil: 200, or as many as fit in `FERRY_LAYER_SECONDS`) from
    /// `seed`; every `containerdEvery`th one (0: none) and every buildah one is also compared
    /// with containerd's unpack.
    static func runRandomStacks(seed: UInt64, stacks requested: Int?, containerdEvery: Int) throws {
        guard integrationPrerequisitesMet(tools: LayerStackHarness.tools) else { return }
        let env = ProcessInfo.processInfo.environment
        let seconds = env["FERRY_LAYER_SECONDS"].flatMap { Double($0) }
        let stacks = requested ?? (seconds == nil ? 200 : Int.max)
        let jobs = max(1, env["FERRY_LAYER_JOBS"].flatMap { Int($0) } ?? 2)
        // buildah builds every sixteenth stack where it is installed (Tools/setup installs it).
        let useBuildah = Shell.has("buildah")
        let verbose = env["FERRY_LAYER_VERBOSE"] != nil
        let ws = try Workspace("layer-stacks")
        let containerd = containerdEvery > 0 ? try Self.containerd(in: ws) : nil
        let results = StackResults()
        let start = Date()
        let scratch = ws.path
        DispatchQueue.concurrentPerform(iterations: jobs) { worker in
            var index = worker
            while index < stacks {
                if let seconds, Date().timeIntervalSince(start) > seconds { break }
                // Each stack has its own seed, so a failure reruns alone.
                let stackSeed = env["FERRY_LAYER_STACK_SEED"].flatMap { UInt64($0) } ?? seed &* 1_000_003 &+ UInt64(index)
                // A directory per stack: a mount a failed stack left behind cannot block the next one.
                var harness = LayerStackHarness(directory: scratch + "/w\(worker)-\(index)")
                var variants: [LayerStackHarness.Variant] = []
                switch index % 16 {
                case 0, 8: variants = [.dockerArchive]
                case 4, 12: variants = [.mixedCompression]
                case 2: harness.builder = useBuildah ? .buildah : .umoci
                default: break
                }
                if containerdEvery > 0 && (index % containerdEvery == 0 || harness.builder == .buildah) {
                    harness.containerd = containerd
                    harness.containerdEveryForm = false
                }
                let outcome = harness.run(seed: stackSeed, variants: variants)
                if verbose { print("stack \(index) seed \(stackSeed) \(variants) \(harness.builder):\n\(outcome.summary)") }
                results.add(outcome, seed: stackSeed) { harness.shrink(outcome) }
                index += jobs
            }
        }
        let elapsed = Date().timeIntervalSince(start)
        let (count, layers, changes, refused, failures) = results.totals
        let (compared, containerdRefused) = results.containerdTotals
        print("layer stacks: \(count) stacks, \(layers) layers, \(changes) changes, \(refused) refused by umoci and Ferry alike, "
            + "\(compared) forms compared with containerd (\(containerdRefused) refused by it, a whiteout below a non-directory), "
            + "seed \(seed), \(jobs) jobs, " + String(format: "%.1f s", elapsed) + ", \(failures.count) failing")
        for failure in failures { Issue.record(Comment(rawValue: failure)) }
        #expect(count >= min(stacks, 1))
    }
}

/// Collects outcomes from the workers; shrinks the first few failures.
private final class StackResults: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0, layers = 0, changes = 0, refused = 0
    private var containerdCompared = 0, containerdRefused = 0
    private var failures: [String] = []

    func add(_ outcome: LayerStackHarness.Outcome, seed: UInt64, shrink: () -> LayerStackHarness.Outcome) {
        let failed = !outcome.differences.isEmpty || outcome.failure != nil
        lock.lock()
        count += 1
        if outcome.bothRefused { refused += 1 }
        layers += outcome.layers.count
        changes += outcome.layers.reduce(0) { $0 + $1.count }
        containerdCompared += outcome.containerdCompared
        containerdRefused += outcome.containerdRefused
        let shrinkThis = failed && failures.count < 3
        lock.unlock()
        guard failed else { return }
        let shown = shrinkThis ? shrink() : outcome
        let text = "stack seed \(seed) differs from umoci or containerd unpack\(shrinkThis ? " (shrunk)" : ""):\n\(shown.summary)"
        lock.lock()
        failures.append(text)
        lock.unlock()
    }

    var containerdTotals: (compared: Int, refused: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (containerdCompared, containerdRefused)
    }

    var totals: (Int, Int, Int, Int, [String]) {
        lock.lock()
        defer { lock.unlock() }
        return (count, layers, changes, refused, failures)
    }
}
