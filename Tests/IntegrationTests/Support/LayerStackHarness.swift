import FerrySystem
import Foundation
import Testing

/// Builds a layer stack with real tools and checks Ferry against `umoci unpack` of it and,
/// when `containerd` is set, against containerd's unpack of the very image Ferry converts.
///
/// Each step's changes are made in an unpacked bundle and `umoci repack --refresh-bundle`
/// turns them into a layer (umoci's own diff: whiteouts, hard links, PAX records as umoci writes
/// them). The references are a fresh `umoci unpack` of the finished image and containerd's
/// native snapshot of it; Ferry's side is `ferry convert` → `ferry export` → the kernel
/// mounting the export. `TreeDiff` compares type, mode, owner, mtime, xattrs, every byte, link
/// targets, device numbers and hard-link groups. Where umoci and containerd disagree Ferry
/// follows containerd; the umoci comparison takes out what containerd never applies
/// (`umociOptions`), the containerd one what its native snapshotter stamps itself
/// (`containerdOptions`). Kernel-Notes/layers.md lists every allowed difference.
struct LayerStackHarness {
    /// Tools a run needs.
    static let tools = ["umoci", "mount", "skopeo"]

    /// What one stack came to.
    struct Outcome: Sendable {
        var layers: [[LayerChange]]
        /// Empty when Ferry equals umoci.
        var differences: [String]
        /// Set when a tool (not the comparison) failed; then `differences` is empty.
        var failure: String?
        /// umoci unpack and Ferry both refused the image.
        var bothRefused = false
        /// Forms of the image (OCI layout, docker-archive, mixed compression) compared with
        /// containerd's unpack, and how many of them containerd refused (the documented case:
        /// a whiteout below a non-directory, which Ferry converts as umoci unpacks it).
        var containerdCompared = 0, containerdRefused = 0

        var summary: String {
            let steps = layers.enumerated().map { "  layer \($0.offset + 1): [\($0.element.map(\.description).joined(separator: ", "))]" }
            return (steps + differences.map { "  ≠ " + $0 } + (failure.map { ["  ✗ " + $0] } ?? [])).joined(separator: "\n")
        }
    }

    /// Which tool turns each step into a layer.
    enum Builder: Sendable {
        /// `umoci repack --refresh-bundle` (gzip layers, whiteouts below replaced directories).
        case umoci
        /// `buildah commit` of a vfs-driver container, then `buildah push` into an `oci:` layout
        /// (uncompressed layers, containers/storage's diff).
        case buildah
    }

    /// A scratch directory for one stack.
    let directory: String
    var builder: Builder = .umoci
    /// Also compare with containerd's unpack of the converted forms.
    var containerd: NativeContainerd? = nil
    /// Which forms containerd unpacks: all, or only the last one converted (the variant where
    /// there is one; every form must already equal umoci's tree, so one containerd unpack
    /// covers the stack at a third of the cost of three).
    var containerdEveryForm = true

    /// Other forms of the same image that are converted and compared too.
    enum Variant: Sendable {
        /// `skopeo copy … docker-archive:`.
        case dockerArchive
        /// Layers compressed in turn with gzip (umoci's), zstd (`skopeo copy
        /// --dest-compress-format zstd`) and not at all (umoci's layer, gunzipped).
        case mixedCompression
    }

    /// Draws a random stack of `1...4` layers from `seed` and checks it, and its `variants`.
    func run(seed: UInt64, variants: [Variant] = []) -> Outcome {
        var generator = LayerStackGenerator(rng: SeededGenerator(seed: seed))
        let layerCount = Int.random(in: 1...4, using: &generator.rng)
        return check(variants: variants) { rootfs, index in
            guard index < layerCount else { return nil }
            return generator.step(in: rootfs, first: index == 0)
        }
    }

    /// Replays a recorded stack (e.g. a shrunk failure) and checks it; `inspect` sees the OCI
    /// layout umoci built before it is converted.
    func replay(_ layers: [[LayerChange]], variants: [Variant] = [], inspect: ((String) throws -> Void)? = nil) -> Outcome {
        check(variants: variants, inspect: inspect) { rootfs, index in
            guard index < layers.count else { return nil }
            for change in layers[index] { change.apply(in: rootfs) }
            // As the generator does: a stamp per step, so that umoci always makes a layer (a
            // shrunk step may have lost the recorded stamp).
            LayerChange.file(".stamp", size: 1000 + index, fill: 0x73, holeAt: nil).apply(in: rootfs)
            return layers[index]
        }
    }

    /// Drops layers, then single changes, while the stack still fails: the smallest failing
    /// stack found this way (delta debugging, one element at a time).
    func shrink(_ failing: Outcome) -> Outcome {
        // A candidate still fails the same way: a difference for a difference, the same tool
        // for a tool failure.
        func tool(_ o: Outcome) -> Substring? { o.failure.map { $0.prefix { $0 != " " } } }
        func stillFails(_ o: Outcome) -> Bool {
            failing.differences.isEmpty ? (tool(o) != nil && tool(o) == tool(failing)) : !o.differences.isEmpty
        }
        var best = failing
        var improved = true
        while improved {
            improved = false
            for i in best.layers.indices.reversed() where best.layers.count > 1 {
                var candidate = best.layers
                candidate.remove(at: i)
                let outcome = replay(candidate)
                if stillFails(outcome) { best = outcome; improved = true; break }
            }
            if improved { continue }
            outer: for i in best.layers.indices {
                for j in best.layers[i].indices.reversed() {
                    var candidate = best.layers
                    candidate[i].remove(at: j)
                    let outcome = replay(candidate)
                    if stillFails(outcome) { best = outcome; improved = true; break outer }
                }
            }
        }
        return best
    }

    private func check(variants: [Variant], inspect: ((String) throws -> Void)? = nil, nextLayer: (_ rootfs: String, _ index: Int) -> [LayerChange]?) -> Outcome {
        let fm = FileManager.default
        try? fm.removeItem(atPath: directory)
        defer {
            _ = try? Shell.run(["umount", "-l", directory + "/mnt"])
            try? fm.removeItem(atPath: directory)
        }
        var layers: [[LayerChange]] = []
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let image = directory + "/img"
            switch builder {
            case .umoci:
                let bundle = directory + "/bundle"
                try Shell.check(["umoci", "init", "--layout", image])
                try Shell.check(["umoci", "new", "--image", image + ":t"])
                try Shell.check(["umoci", "unpack", "--image", image + ":t", bundle])
                while let changes = nextLayer(bundle + "/rootfs", layers.count) {
                    layers.append(changes)
                    try Shell.check(["umoci", "repack", "--refresh-bundle", "--no-history", "--image", image + ":t", bundle])
                }
            case .buildah:
                let buildah = ["buildah", "--root", directory + "/storage", "--runroot", directory + "/run", "--storage-driver", "vfs"]
                var base = "scratch"
                while true {
                    let container = try Shell.check(buildah + ["from", "--pull=never", "-q", base]).trimmingCharacters(in: .whitespacesAndNewlines)
                    let rootfs = try Shell.check(buildah + ["mount", container]).trimmingCharacters(in: .whitespacesAndNewlines)
                    guard let changes = nextLayer(rootfs, layers.count) else { break }
                    layers.append(changes)
                    base = "localhost/step\(layers.count)"
                    try Shell.check(buildah + ["commit", "-q", "--omit-history", container, base])
                    try Shell.check(buildah + ["rm", container])
                }
                try Shell.check(buildah + ["push", "-q", base, "oci:\(image):t"])
            }
            let unpack = try Shell.run(["umoci", "unpack", "--image", image + ":t", directory + "/ref"])
            guard unpack.status == 0 else {
                // umoci refuses some of its own layers (a whiteout below a symlink loop: ELOOP);
                // so does containerd (`fs.RootPath`), and Ferry must too.
                let convert = try Shell.run([Build.ferry, "convert", "oci:\(image):t", "oci:\(directory)/ferry:t"])
                var outcome = Outcome(layers: layers, differences: convert.status == 0 ? ["umoci unpack refuses the image, Ferry converts it: \(unpack.stderr)"] : [], bothRefused: true)
                if let containerd {
                    let unpacked = try containerd.unpack("oci:\(image):t", scratch: directory + "/ctr")
                    defer { containerd.remove(unpacked) }
                    outcome.containerdCompared = 1
                    if unpacked.rootfs != nil { outcome.differences.append("containerd unpacks the image that umoci refuses") }
                }
                return outcome
            }
            try inspect?(image)
            var outcome = Outcome(layers: layers, differences: [])
            func compareForm(_ input: String, _ form: String, last: Bool) throws {
                let containerd = containerdEveryForm || last ? containerd : nil
                let result = try compare(input: input, reference: directory + "/ref/rootfs", containerd: containerd)
                outcome.differences = result.differences.map { form + $0 }
                if containerd != nil { outcome.containerdCompared += 1 }
                if result.containerdRefusal != nil { outcome.containerdRefused += 1 }
            }
            try compareForm("oci:\(image):t", "", last: variants.isEmpty)
            for (i, variant) in variants.enumerated() where outcome.differences.isEmpty {
                let last = i == variants.count - 1
                switch variant {
                case .dockerArchive:
                    let archive = directory + "/img.tar"
                    try Shell.check(["skopeo", "--insecure-policy", "copy", "-q", "oci:\(image):t", "docker-archive:\(archive):ferry/stack:t"])
                    try compareForm("docker-archive:\(archive)", "docker-archive: ", last: last)
                case .mixedCompression:
                    try Self.tagMixedCompression(image: image, scratch: directory + "/zstd")
                    try compareForm("oci:\(image):mixed", "mixed compression: ", last: last)
                }
            }
            return outcome
        } catch {
            return Outcome(layers: layers, differences: [], failure: "\(error)")
        }
    }

    /// Tags `mixed` in `image`: tag `t`'s layers, the first gzip (as umoci wrote it), the
    /// second zstd (skopeo's recompression), the third uncompressed, and so on in turn.
    static func tagMixedCompression(image: String, scratch: String) throws {
        try Shell.check(["skopeo", "--insecure-policy", "copy", "-q", "--dest-compress-format", "zstd", "oci:\(image):t", "oci:\(scratch):t"])
        func manifest(_ layout: String) throws -> (digest: String, json: [String: Any]) {
            let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layout + "/index.json"))) as? [String: Any]
            let entry = (index?["manifests"] as? [[String: Any]])?.first { ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] == "t" }
            let digest = try #require(entry?["digest"] as? String)
            let blob = try Data(contentsOf: URL(fileURLWithPath: layout + "/blobs/sha256/" + digest.dropFirst(7)))
            return (digest, try #require(try JSONSerialization.jsonObject(with: blob) as? [String: Any]))
        }
        var (_, mixed) = try manifest(image)
        let zstd = try manifest(scratch).json
        var layers = try #require(mixed["layers"] as? [[String: Any]])
        let zstdLayers = try #require(zstd["layers"] as? [[String: Any]])
        for i in layers.indices {
            switch i % 3 {
            case 1:
                let digest = try #require(zstdLayers[i]["digest"] as? String)
                try FileManager.default.copyItem(atPath: scratch + "/blobs/sha256/" + digest.dropFirst(7), toPath: image + "/blobs/sha256/" + digest.dropFirst(7))
                layers[i] = zstdLayers[i]
            case 2:
                let gzipped = image + "/blobs/sha256/" + (try #require(layers[i]["digest"] as? String)).dropFirst(7)
                let plain = scratch + "/plain.tar"
                try Shell.check(["sh", "-c", "gzip -dc '\(gzipped)' > '\(plain)'"])
                let hex = String(try Shell.check(["sha256sum", plain]).prefix(64))
                try? FileManager.default.moveItem(atPath: plain, toPath: image + "/blobs/sha256/" + hex)
                let size = try #require(try FileManager.default.attributesOfItem(atPath: image + "/blobs/sha256/" + hex)[.size] as? Int)
                layers[i] = ["mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + hex, "size": size]
            default:
                break
            }
        }
        mixed["layers"] = layers
        let bytes = try JSONSerialization.data(withJSONObject: mixed, options: [.sortedKeys])
        let manifestPath = scratch + "/manifest.json"
        try bytes.write(to: URL(fileURLWithPath: manifestPath))
        let hex = String(try Shell.check(["sha256sum", manifestPath]).prefix(64))
        try? FileManager.default.moveItem(atPath: manifestPath, toPath: image + "/blobs/sha256/" + hex)
        let indexURL = URL(fileURLWithPath: image + "/index.json")
        var index = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: indexURL)) as? [String: Any])
        var manifests = try #require(index["manifests"] as? [[String: Any]])
        manifests.append(["mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + hex, "size": bytes.count,
                          "annotations": ["org.opencontainers.image.ref.name": "mixed"]])
        index["manifests"] = manifests
        try JSONSerialization.data(withJSONObject: index).write(to: indexURL)
    }

    /// The one allowed difference besides the root's mtime (Kernel-Notes/layers.md): an empty
    /// directory (0755, root, mtime 0) that Ferry made, as containerd does, for a whiteout
    /// whose parent path is missing, e.g. at a dangling symlink's target when umoci repack writes
    /// a directory replaced by that symlink as the symlink plus whiteouts below it. umoci
    /// creates nothing there.
    static func isWhiteoutParent(_ difference: String, in mnt: String) -> Bool {
        let suffix = ": unexpected in actual"
        guard difference.hasSuffix(suffix) else { return false }
        let path = Array((mnt + "/" + difference.dropLast(suffix.count)).utf8)
        guard let status = try? RawPath.status(path), status.isDirectory, status.mode & 0o7777 == 0o755,
              status.uid == 0, status.gid == 0, status.mtimeSeconds == 0, (try? RawPath.list(path))?.isEmpty == true else { return false }
        return true
    }

    /// What umoci's unpack has and containerd's never does, taken out of umoci's tree before it
    /// is compared (Ferry follows containerd): the root's metadata (containerd ignores `./`
    /// entries), `trusted.*` xattrs (containerd never sets them) and mtimes before 1970 or
    /// after 2262 (containerd's `boundTime` makes them the epoch). The root's mtime is umoci's
    /// unpack time.
    static let umociOptions = TreeDiff.Options(compareRootMtime: false, compareRootMetadata: false,
                                               droppedExpectedXattrPrefixes: [Array("trusted.".utf8)], boundExpectedMtimes: true)

    /// What containerd's native snapshot has that is no part of the image: directory mtimes it
    /// stamps during `unpack` (each layer's snapshot is a copy of the one below, and the copy
    /// sets a directory's times before filling it; `mkparent` makes directories "now"), the
    /// root's mtime, and xattrs the naive applier leaves on a directory a later layer rewrote
    /// without them (Ferry, umoci and containerd's overlay applier drop those).
    static func containerdOptions(unpackTime: ClosedRange<Int64>) -> TreeDiff.Options {
        TreeDiff.Options(compareRootMtime: false, unpackTime: unpackTime, expectedDirectoryXattrsMayExceed: true)
    }

    /// Names that a layer of `image` (tag `t`) writes and then whites out itself (`x`, later
    /// `.wh.x`, or `d/.wh.x` where `d` leads back to `x`, as umoci repack writes a directory
    /// replaced by a symlink to its parent). containerd's naive applier removes such an entry,
    /// its overlay applier refuses the layer, umoci and Ferry keep it (whiteouts apply to lower
    /// layers only): the entry is an allowed difference from the native snapshot.
    static func namesWhitedOutByTheirOwnLayer(image: String) throws -> Set<String> {
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: image + "/index.json"))) as? [String: Any]
        let entry = (index?["manifests"] as? [[String: Any]])?.first { ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] == "t" }
        let digest = try #require(entry?["digest"] as? String)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: image + "/blobs/sha256/" + digest.dropFirst(7)))) as? [String: Any]
        var names: Set<String> = []
        for layer in (manifest?["layers"] as? [[String: Any]]) ?? [] {
            guard let layerDigest = layer["digest"] as? String else { continue }
            // GNU tar detects gzip by itself; layers of tag `t` are gzip (umoci) or plain (buildah).
            let listing = try Shell.check(["tar", "--quoting-style=literal", "-tf", image + "/blobs/sha256/" + layerDigest.dropFirst(7)])
            var written: Set<String> = []
            for path in listing.split(separator: "\n") {
                guard let base = path.split(separator: "/").last.map(String.init) else { continue }
                if base.hasPrefix(".wh."), written.contains(String(base.dropFirst(4))) { names.insert(String(base.dropFirst(4))) }
                written.insert(base)
            }
        }
        return names
    }

    /// The refusal the notes document: containerd's `mkparent` meets a non-directory where a
    /// whiteout's parent should be (umoci repack writes a directory replaced by a file as the
    /// file plus whiteouts of the old children below it). Ferry converts these as umoci does.
    static func isDocumentedRefusal(_ message: String) -> Bool {
        message.contains("mkparent") && message.contains("not a directory")
    }

    /// Converts `input`, exports it, mounts the export and compares it with `reference`.
    func compare(input: String, reference: String) throws -> [String] {
        try compare(input: input, reference: reference, containerd: nil).differences
    }

    /// Converts `input`, exports it, mounts the export and compares it with `reference`
    /// (umoci's unpack) and with containerd's unpack of `input` when `containerd` is set.
    func compare(input: String, reference: String, containerd: NativeContainerd?) throws -> (differences: [String], containerdRefusal: String?) {
        let converted = directory + "/ferry", exported = directory + "/export.erofs", mnt = directory + "/mnt"
        let unpacked = try containerd?.unpack(input, scratch: directory + "/ctr")
        defer { if let unpacked { containerd?.remove(unpacked) } }
        try? FileManager.default.removeItem(atPath: converted)
        try Shell.check([Build.ferry, "convert", input, "oci:\(converted):t", "--chunk-size", "64KiB"])
        try Shell.check([Build.ferry, "export", "oci:\(converted):t", exported])
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try Shell.check(["mount", "-t", "erofs", "-o", "ro,loop", exported, mnt])
        defer { _ = try? Shell.run(["umount", mnt]) }
        var differences = try TreeDiff.differences(expected: reference, actual: mnt, options: Self.umociOptions, limit: 20)
            .filter { !$0.hasPrefix("compared only") && !Self.isWhiteoutParent($0, in: mnt) }
        guard let unpacked else { return (differences, nil) }
        if let rootfs = unpacked.rootfs {
            var fromContainerd = try TreeDiff.differences(expected: rootfs, actual: mnt, options: Self.containerdOptions(unpackTime: unpacked.window), limit: 20)
                .filter { !$0.hasPrefix("compared only") }
            let suffix = ": unexpected in actual"
            if fromContainerd.contains(where: { $0.hasSuffix(suffix) }) {
                let whitedOut = try Self.namesWhitedOutByTheirOwnLayer(image: directory + "/img")
                fromContainerd.removeAll { $0.hasSuffix(suffix) && whitedOut.contains(String($0.dropLast(suffix.count).split(separator: "/").last ?? "")) }
            }
            differences += fromContainerd.map { "containerd: " + $0 }
        } else if let refusal = unpacked.refusal, !Self.isDocumentedRefusal(refusal) {
            differences.append("containerd refuses the image, Ferry converts it: \(refusal)")
        }
        return (differences, unpacked.refusal)
    }
}
