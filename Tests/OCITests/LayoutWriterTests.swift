import FerrySystem
import Foundation
import Testing
@testable import OCI

@Suite struct LayoutWriterTests {
    /// Writes a one-layer image for `platform` and returns its manifest descriptor.
    static func addImage(_ writer: OCILayoutWriter, platform: Platform, content: String,
                         manifestType: String = MediaType.ociManifest) throws -> Descriptor {
        var tar = TarBuilder()
        tar.file("arch", content)
        tar.end()
        let layer = try writer.addBlob(try Gzip.compress(tar.bytes), mediaType: MediaType.ociLayerGzip)
        let configJSON = #"{"architecture":"\#(platform.architecture)","os":"\#(platform.os)"\#(platform.variant.map { #","variant":"\#($0)""# } ?? ""),"rootfs":{"type":"layers","diff_ids":["\#(Digest(sha256: SHA256.hash(tar.bytes)))"]}}"#
        let config = try writer.addBlob(Array(configJSON.utf8), mediaType: MediaType.ociConfig)
        let manifest = Manifest(mediaType: manifestType, config: config, layers: [layer])
        var descriptor = try writer.addBlob(try CanonicalJSON.encode(manifest), mediaType: manifestType)
        descriptor.platform = platform
        return descriptor
    }

    /// A multi-platform layout: tag "multi" names an index holding amd64, arm/v7, an attestation
    /// manifest, and a nested Docker manifest list with arm64/v8; tag "single" names one manifest.
    static func writeMultiPlatform(to dir: String) throws {
        let writer = try OCILayoutWriter(directory: dir)
        let amd64 = try addImage(writer, platform: Platform(os: "linux", architecture: "amd64"), content: "amd64")
        let armv7 = try addImage(writer, platform: Platform(os: "linux", architecture: "arm", variant: "v7"), content: "armv7")
        let arm64 = try addImage(writer, platform: Platform(os: "linux", architecture: "arm64", variant: "v8"), content: "arm64",
                                 manifestType: MediaType.dockerManifest)
        var attestation = try addImage(writer, platform: Platform(os: "unknown", architecture: "unknown"), content: "att")
        attestation.annotations = ["vnd.docker.reference.type": "attestation-manifest"]
        let nested = Index(mediaType: MediaType.dockerManifestList, manifests: [arm64])
        let nestedDescriptor = try writer.addBlob(try CanonicalJSON.encode(nested), mediaType: MediaType.dockerManifestList)
        let top = Index(manifests: [attestation, amd64, armv7, nestedDescriptor])
        writer.addIndexEntry(try writer.addBlob(try CanonicalJSON.encode(top), mediaType: MediaType.ociIndex), tag: "multi")
        _ = try writer.addManifest(Manifest(config: try writer.addBlob(Array(#"{"os":"linux","architecture":"riscv64"}"#.utf8), mediaType: MediaType.ociConfig),
                                            layers: []), tag: "single")
        try writer.finish()
    }

    static func archContent(_ source: any ImageSource, _ platform: Platform?) throws -> String {
        let (tree, _) = try mergeImage(source, platform: platform)
        guard let node = tree.lookup(components("arch")), case let .regular(_, payload) = tree.nodes[node].content else { return "" }
        return String(decoding: payload ?? [], as: UTF8.self)
    }

    @Test func resolvesPlatformsThroughNestedIndexes() throws {
        let dir = try makeTemporaryDirectory("multi")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.writeMultiPlatform(to: dir)
        let source = try OCILayoutSource(directory: dir, tag: "multi")
        #expect(try Self.archContent(source, try Platform(parsing: "linux/amd64")) == "amd64")
        #expect(try Self.archContent(source, try Platform(parsing: "linux/arm/v7")) == "armv7")
        #expect(try Self.archContent(source, try Platform(parsing: "linux/arm64")) == "arm64")
        #expect(try Self.archContent(source, try Platform(parsing: "linux/arm64/v8")) == "arm64")
        let image = try source.resolve(platform: try Platform(parsing: "linux/arm64"))
        #expect(image.manifestDescriptor.mediaType == MediaType.dockerManifest)
        #expect(image.manifestDigest == Digest(sha256: SHA256.hash(image.manifestBytes)))
        #expect(image.configuration.platform == Platform(os: "linux", architecture: "arm64", variant: "v8"))

        // No match lists every real platform, nested ones included (not the attestation).
        expectOCIError("s390x", { _ = try source.resolve(platform: try Platform(parsing: "linux/s390x")) }) {
            if case let .noMatchingPlatform(requested, available) = $0 {
                return requested.architecture == "s390x" && available.map(\.description) == ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]
            }
            return false
        }
        // A single manifest ignores the default platform, but not an explicit one it contradicts.
        let single = try OCILayoutSource(directory: dir, tag: "single")
        #expect(try single.resolve(platform: nil).configuration.architecture == "riscv64")
        expectOCIError("explicit", { _ = try single.resolve(platform: try Platform(parsing: "linux/amd64")) }) {
            if case let .noMatchingPlatform(_, available) = $0 { return available.map(\.description) == ["linux/riscv64"] }
            return false
        }
    }

    @Test func writerOutputIsDeterministicAndReadableBySkopeo() throws {
        let a = try makeTemporaryDirectory("det-a")
        let b = try makeTemporaryDirectory("det-b")
        defer {
            try? FileManager.default.removeItem(atPath: a)
            try? FileManager.default.removeItem(atPath: b)
        }
        try Self.writeMultiPlatform(to: a)
        try Self.writeMultiPlatform(to: b)
        for name in ["oci-layout", "index.json"] {
            #expect(try readFile("\(a)/\(name)") == (try readFile("\(b)/\(name)")), "\(name)")
        }
        #expect(String(decoding: try readFile("\(a)/oci-layout"), as: UTF8.self) == #"{"imageLayoutVersion":"1.0.0"}"#)
        let index = try CanonicalJSON.decode(Index.self, from: try readFile("\(a)/index.json"), what: "index")
        #expect(index.manifests.compactMap { $0.annotations?[refNameAnnotation] } == ["multi", "single"])
        // Nothing but the layout's own files, and no temporary files left behind.
        let blobs = try FileManager.default.contentsOfDirectory(atPath: "\(a)/blobs/sha256")
        #expect(blobs.allSatisfy { !$0.hasPrefix(".") && $0.count == 64 })
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: a)) == ["blobs", "oci-layout", "index.json"])
        for blob in blobs {
            #expect(hexString(SHA256.hash(try readFile("\(a)/blobs/sha256/\(blob)"))) == blob)
        }
        guard which("skopeo") != nil else { print("skipping the skopeo check: skopeo is not installed"); return }
        let inspected = try run("skopeo", ["inspect", "--raw", "oci:\(a):multi"])
        #expect(inspected.contains(MediaType.ociIndex))
        let single = try run("skopeo", ["inspect", "--config", "oci:\(a):single"])
        #expect(single.contains("riscv64"))
    }

    @Test func movesBlobsInAndReplacesTags() throws {
        let dir = try makeTemporaryDirectory("move")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let writer = try OCILayoutWriter(directory: "\(dir)/out")
        let content = Array("blob content".utf8)
        let digest = Digest(sha256: SHA256.hash(content))
        try writeFile("\(dir)/out/scratch1", content)
        let computed = try writer.moveBlob(from: "\(dir)/out/scratch1", mediaType: MediaType.ferryBlob)
        #expect(computed.digest == digest && computed.size == Int64(content.count))
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/out/scratch1"))
        #expect(try readFile(writer.blobPath(digest)) == content)
        // Taking the caller's digest; a blob already present is kept and the new file dropped.
        try writeFile("\(dir)/out/scratch2", content)
        let taken = try writer.moveBlob(from: "\(dir)/out/scratch2", mediaType: MediaType.ferryBlob, digest: digest)
        #expect(taken == computed)
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/out/scratch2"))

        let config = try writer.addBlob(Array("{}".utf8), mediaType: MediaType.ociConfig)
        let first = try writer.addManifest(Manifest(config: config, layers: [computed]), tag: "v1")
        let second = try writer.addManifest(Manifest(config: config, layers: []), tag: "v1")
        try writer.finish()
        let source = try OCILayoutSource(directory: "\(dir)/out", tag: "v1")
        #expect(source.index.manifests.count == 1)
        #expect(try source.rootDescriptor().digest == second.digest && first.digest != second.digest)
        #expect(try source.resolve(platform: nil).manifest.layers.isEmpty)
    }
}
