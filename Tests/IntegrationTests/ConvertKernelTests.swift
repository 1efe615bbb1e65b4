import Foundation
import Testing

/// `ferry convert` end to end, judged by outside oracles: `fsck.erofs`, the host kernel mounting
/// what Ferry wrote, and `umoci unpack` of the same image.
@Suite(.serialized) struct ConvertKernelTests {
    @Test func convertedImageMountsAndEqualsUmociUnpackEveryByte() throws {
        guard integrationPrerequisitesMet(tools: RichImage.tools) else { return }
        let image = try RichImage.get()
        let ws = try Workspace("convert")
        let out = ws.sub("ferry")
        try Shell.check([Build.ferry, "convert", "oci:\(image.layout):t", "oci:\(out):t", "--chunk-size", "64KiB"])
        try Shell.check([Build.ferry, "check", "oci:\(out):t"])

        // 1. Self-contained export: fsck.erofs, then the kernel through a loop device.
        let exported = ws.sub("export.erofs")
        try Shell.check([Build.ferry, "export", "oci:\(out):t", exported])
        try Shell.check(["fsck.erofs", exported])
        let mnt1 = ws.sub("mnt-export")
        try FileManager.default.createDirectory(atPath: mnt1, withIntermediateDirectories: true)
        try Shell.check(["mount", "-t", "erofs", "-o", "ro,loop", exported, mnt1])
        defer { _ = try? Shell.run(["umount", mnt1]) }
        let exportDiff = try TreeDiff.differences(expected: image.reference, actual: mnt1)
        #expect(exportDiff.isEmpty, "export differs from umoci unpack:\n\(exportDiff.joined(separator: "\n"))")

        // 2. The bootstrap itself with materialized blob devices (what the daemon serves lazily).
        let devices = ws.sub("devices")
        let materialized = try Shell.check([Build.ferry, "materialize", "oci:\(out):t", devices])
        let bootstrap = devices + "/bootstrap.erofs"
        let deviceFiles = materialized.split(separator: "\n").map(String.init).filter { $0.hasSuffix(".blob") }
        #expect(!deviceFiles.isEmpty)
        try Shell.check(["fsck.erofs"] + deviceFiles.map { "--device=\($0)" } + [bootstrap])
        var loops: [String] = []
        defer { for l in loops { _ = try? Shell.run(["losetup", "-d", l]) } }
        for file in deviceFiles {
            loops.append(try Shell.check(["losetup", "--find", "--show", "--read-only", file]).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let mnt2 = ws.sub("mnt-bootstrap")
        try FileManager.default.createDirectory(atPath: mnt2, withIntermediateDirectories: true)
        let options = (["ro", "loop"] + loops.map { "device=\($0)" }).joined(separator: ",")
        try Shell.check(["mount", "-t", "erofs", "-o", options, bootstrap, mnt2])
        defer { _ = try? Shell.run(["umount", mnt2]) }
        let bootstrapDiff = try TreeDiff.differences(expected: image.reference, actual: mnt2)
        #expect(bootstrapDiff.isEmpty, "bootstrap+devices differ from umoci unpack:\n\(bootstrapDiff.joined(separator: "\n"))")
    }

    @Test func conversionIsReproducible() throws {
        guard integrationPrerequisitesMet(tools: RichImage.tools) else { return }
        let image = try RichImage.get()
        let ws = try Workspace("repro")
        var digests: [String] = []
        for run in ["a", "b"] {
            let out = ws.sub(run)
            try Shell.check([Build.ferry, "convert", "oci:\(image.layout):t", "oci:\(out):t", "--compressor", "zstd"])
            let index = try String(contentsOfFile: out + "/index.json", encoding: .utf8)
            digests.append(index)
            let blobs = try FileManager.default.contentsOfDirectory(atPath: out + "/blobs/sha256").sorted()
            digests.append(blobs.joined(separator: ","))
        }
        #expect(digests[0] == digests[2])
        #expect(digests[1] == digests[3])
    }
}

@Suite(.serialized) struct ChunkDictionaryTests {
    /// Converting with `--chunk-dict` of an image that already has every chunk writes no new blob:
    /// the new bootstrap points at the dictionary's blobs, and the result checks and exports equal.
    @Test func aChunkDictionaryImageProvidesEveryChunk() throws {
        guard integrationPrerequisitesMet(tools: RichImage.tools) else { return }
        let image = try RichImage.get()
        let ws = try Workspace("chunk-dict")
        let dict = ws.sub("dict"), out = ws.sub("out")
        try Shell.check([Build.ferry, "convert", "oci:\(image.layout):t", "oci:\(dict):t"])
        let json = try Shell.check([Build.ferry, "convert", "oci:\(image.layout):t", "oci:\(out):t", "--chunk-dict", "oci:\(dict):t", "--json"])
        #expect(json.contains("\"blobCompressedBytes\":0"), "no new blob bytes: \(json)")
        try Shell.check([Build.ferry, "check", "oci:\(out):t"])
        let exported = ws.sub("x.erofs"), mnt = ws.sub("mnt")
        try Shell.check([Build.ferry, "export", "oci:\(out):t", exported])
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try Shell.check(["mount", "-t", "erofs", "-o", "ro,loop", exported, mnt])
        defer { _ = try? Shell.run(["umount", mnt]) }
        let diff = try TreeDiff.differences(expected: image.reference, actual: mnt)
        #expect(diff.isEmpty, "\(diff.joined(separator: "\n"))")
    }
}
