import Foundation
import Testing

/// The rich multi-layer test image, built once per test process with real tools: the layer tars
/// come from Fixtures/make_layers.py, `umoci raw add-layer` makes the OCI image, and
/// `umoci unpack` gives the reference tree every Ferry output is compared against.
final class RichImage: @unchecked Sendable {
    let workspace: Workspace
    /// `oci:` layout directory with the image tagged `t`.
    let layout: String
    /// The reference tree (`umoci unpack`'s rootfs).
    let reference: String

    private static let lock = NSLock()
    nonisolated(unsafe) private static var shared: RichImage?

    /// Tools the image needs.
    static let tools = ["umoci", "python3", "mount", "fsck.erofs"]

    /// The image, built on first use. `bigMiB` sizes the sparse-ish big file.
    static func get(bigMiB: Int = 50) throws -> RichImage {
        lock.lock()
        defer { lock.unlock() }
        if let shared { return shared }
        let image = try RichImage(bigMiB: bigMiB)
        shared = image
        return image
    }

    /// A fresh image of its own (not the shared one), e.g. a small one for the VM.
    init(bigMiB: Int) throws {
        workspace = try Workspace("rich-image")
        layout = workspace.sub("source")
        let tars = workspace.sub("tars")
        try FileManager.default.createDirectory(atPath: tars, withIntermediateDirectories: true)
        let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"
        try Shell.check([python, Build.fixture("make_layers.py"), tars, "--big-mib", String(bigMiB)])
        try Shell.check(["umoci", "init", "--layout", layout])
        try Shell.check(["umoci", "new", "--image", "\(layout):t"])
        for layer in ["layer1", "layer1b", "layer2", "layer3"] {
            try Shell.check(["umoci", "raw", "add-layer", "--no-history", "--image", "\(layout):t", "\(tars)/\(layer).tar"])
        }
        let bundle = workspace.sub("bundle")
        try Shell.check(["umoci", "unpack", "--image", "\(layout):t", bundle])
        reference = bundle + "/rootfs"
        try Self.followContainerd(reference: reference)
    }
}

extension RichImage {
    /// Makes a `umoci unpack` tree what containerd unpacks, where the two differ for this image
    /// (as Ferry follows containerd, Kernel-Notes/layers.md): containerd never sets `trusted.*`
    /// xattrs from a layer, so they are removed from the tree.
    static func followContainerd(reference: String) throws {
        try Shell.check(["python3", "-c", """
            import os, sys
            for top, dirs, files in os.walk(sys.argv[1]):
                for name in [top] + [os.path.join(top, n) for n in dirs + files]:
                    for key in os.listxattr(name, follow_symlinks=False):
                        if key.startswith("trusted."):
                            os.removexattr(name, key, follow_symlinks=False)
            """, reference])
    }
}

/// Decides whether an integration test can run: it returns false (after printing why) when the
/// machine lacks something, except in CI (`FERRY_REQUIRE_INTEGRATION` set) where that is a failure.
func integrationPrerequisitesMet(tools: [String], root: Bool = true) -> Bool {
    guard let missing = Build.missingPrerequisite(tools: tools, root: root) else { return true }
    if Build.integrationRequired {
        Issue.record("integration prerequisite missing in CI: \(missing)")
    } else {
        print("SKIPPED: \(missing)")
    }
    return false
}
