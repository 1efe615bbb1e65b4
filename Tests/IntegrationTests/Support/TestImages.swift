import Foundation

/// Small real images for the containerd tests: busybox trees made into OCI images by umoci
/// (gzip layers) and pushed to a test registry with skopeo.
enum TestImages {
    struct Image {
        /// `oci:` layout with the image tagged `t`.
        var layout: String
        /// `umoci unpack`'s rootfs of it.
        var unpacked: String
    }

    /// A busybox image `<registry>/<name>:oci`: `/bin/busybox` with applet links, `/greeting`
    /// ("hello from NAME"), a `bigFileMiB` file of noise, and `extraLayers` more layers that
    /// change files (a replacement, a deletion, a new directory).
    static func busybox(_ ws: Workspace, name: String, registry: String, bigFileMiB: Int = 0, extraLayers: Int = 0,
                        dataFiles: Int = 0, entrypoint: [String]? = nil) throws -> Image {
        let tree = ws.sub("\(name)-tree")
        try FileManager.default.createDirectory(atPath: tree + "/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: tree + "/bin/busybox")
        for applet in ["sh", "cat", "echo", "ls", "sleep", "true", "md5sum", "seq"] {
            try FileManager.default.createSymbolicLink(atPath: tree + "/bin/" + applet, withDestinationPath: "busybox")
        }
        try "hello from \(name)\n".write(toFile: tree + "/greeting", atomically: true, encoding: .utf8)
        try "gone soon\n".write(toFile: tree + "/doomed", atomically: true, encoding: .utf8)
        if bigFileMiB > 0 {
            try MountStorm.noise(seed: 7, count: bigFileMiB << 20).write(to: URL(fileURLWithPath: tree + "/big.bin"))
        }
        if dataFiles > 0 {
            try FileManager.default.createDirectory(atPath: tree + "/data", withIntermediateDirectories: true)
            for i in 0..<dataFiles {
                try MountStorm.noise(seed: UInt64(5000 + i), count: 192 * 1024 + i).write(to: URL(fileURLWithPath: tree + "/data/f\(i)"))
            }
        }
        let layout = ws.sub("\(name)-oci")
        try Shell.check(["umoci", "init", "--layout", layout])
        try Shell.check(["umoci", "new", "--image", "\(layout):t"])
        try addLayer(tree, to: layout, ws: ws, name: "\(name)-0")
        for i in 0..<extraLayers {
            let layer = ws.sub("\(name)-layer\(i + 1)")
            try FileManager.default.createDirectory(atPath: layer + "/etc/d\(i)", withIntermediateDirectories: true)
            try "layer \(i + 1)\n".write(toFile: layer + "/etc/d\(i)/file", atomically: true, encoding: .utf8)
            if i == 0 {
                try ".wh.doomed".write(toFile: layer + "/.wh.doomed", atomically: true, encoding: .utf8)
                try "replaced in layer 1\n".write(toFile: layer + "/greeting-2", atomically: true, encoding: .utf8)
            }
            try addLayer(layer, to: layout, ws: ws, name: "\(name)-\(i + 1)")
        }
        var config = ["umoci", "config", "--image", "\(layout):t"]
        for part in entrypoint ?? ["/bin/sh"] { config += ["--config.entrypoint", part] }
        try Shell.check(config)
        let bundle = ws.sub("\(name)-bundle")
        try Shell.check(["umoci", "unpack", "--image", "\(layout):t", bundle])
        try Shell.check(["skopeo", "copy", "--dest-tls-verify=false", "oci:\(layout):t", "docker://\(registry)/\(name):oci"])
        return Image(layout: layout, unpacked: bundle + "/rootfs")
    }

    /// The pod sandbox image `<registry>/pause:oci`: busybox sleeping until killed.
    static func pause(_ ws: Workspace, registry: String) throws -> Image {
        try busybox(ws, name: "pause", registry: registry, entrypoint: ["/bin/sleep", "100000"])
    }

    private static func addLayer(_ tree: String, to layout: String, ws: Workspace, name: String) throws {
        let tar = ws.sub("\(name).tar")
        try Shell.check(["tar", "-cf", tar, "-C", tree, "--owner=0", "--group=0", "."])
        try Shell.check(["umoci", "raw", "add-layer", "--no-history", "--image", "\(layout):t", tar])
    }

    /// The manifest of the image tagged `tag` in an OCI layout.
    static func manifest(layout: String, tag: String) throws -> [String: Any] {
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layout + "/index.json"))) as? [String: Any]
        let entries = index?["manifests"] as? [[String: Any]] ?? []
        let entry = entries.first { ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] == tag } ?? entries.first
        let digest = (entry?["digest"] as? String ?? "").replacingOccurrences(of: "sha256:", with: "")
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(layout)/blobs/sha256/\(digest)"))
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    /// The layer digests of an image in an OCI layout.
    static func layerDigests(layout: String, tag: String) throws -> [String] {
        ((try manifest(layout: layout, tag: tag))["layers"] as? [[String: Any]] ?? []).compactMap { $0["digest"] as? String }
    }

    /// Compressed bytes of the image's layers.
    static func blobBytes(layout: String, tag: String) throws -> Int {
        ((try manifest(layout: layout, tag: tag))["layers"] as? [[String: Any]] ?? []).reduce(0) { $0 + (($1["size"] as? Int) ?? 0) }
    }
}
