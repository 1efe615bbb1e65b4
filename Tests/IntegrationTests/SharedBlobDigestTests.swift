import Blob
import FerrySystem
import Foundation
import Testing

/// Two images that name the same blob digest with different chunk tables. The forged image
/// ("attacker") keeps the real blob and a manifest that lists it, but its chunk table declares a
/// compressed chunk stored as is, which moves every later chunk in the blob's address space;
/// every chunk still verifies against the table that names it. Mounted first, it must not decide what the genuine image reads (before blob state was
/// keyed by the chunk table too, the genuine image read the forged layout from the shared cache
/// file), and it reads its own table's bytes.
@Suite(.serialized) struct SharedBlobDigestTests {
    @Test func imagesSharingABlobDigestWithDifferentChunkTablesEachReadTheirOwnBytes() throws {
        guard integrationPrerequisitesMet(tools: FanotifyDaemonTests.tools) else { return }
        let ws = try Workspace("shared-digest")
        let (image, reference, layout, registry) = try FanotifyDaemonTests.converted(ws)
        let forgedReference = "docker://\(registry.host)/rich:forged"
        let forgedChunk = try Self.forgeChunkTable(layout: layout, tag: "t", newTag: "forged")
        try Shell.check([Build.ferry, "push", "oci:\(layout):forged", forgedReference, "--plain-http", registry.host])

        let daemon = try FanotifyDaemonTests.daemon(ws, registry)
        let forgedMount = try FanotifyDaemonTests.mountpoint(ws, "forged"), genuineMount = try FanotifyDaemonTests.mountpoint(ws, "genuine")
        try daemon.ferry(["mount", forgedReference, forgedMount])
        defer { _ = try? daemon.ferry(["umount", forgedMount]) }
        // The forged image is read first, whole: its cache state is complete before the genuine one mounts.
        let forgedDiff = try TreeDiff.differences(expected: image.reference, actual: forgedMount)
        #expect(!forgedDiff.isEmpty, "the forged chunk table (chunk \(forgedChunk) declared uncompressed) reads its own bytes")
        #expect(forgedDiff.allSatisfy { $0.contains("contents differ") }, "only file bytes differ: \(forgedDiff)")

        try daemon.ferry(["mount", reference, genuineMount])
        defer { _ = try? daemon.ferry(["umount", genuineMount]) }
        let genuineDiff = try TreeDiff.differences(expected: image.reference, actual: genuineMount)
        #expect(genuineDiff.isEmpty, "the genuine image reads its own bytes, not the forged table's:\n\(genuineDiff.joined(separator: "\n"))")
        // And the forged one still reads its own after the genuine one filled its cache.
        #expect(try TreeDiff.differences(expected: image.reference, actual: forgedMount) == forgedDiff)
        let cacheFiles = try FileManager.default.contentsOfDirectory(atPath: daemon.stateDirectory + "/cache").filter { $0.hasSuffix(".blob") }
        let blobsPerImage = try Set(cacheFiles.map { String($0.prefix(64)) }).count
        #expect(cacheFiles.count == blobsPerImage + 1, "the forged blob has a cache file of its own: \(cacheFiles)")
    }

    /// Copies the image tagged `tag` in the Ferry layout to `newTag`, with a bootstrap whose chunk
    /// table for the largest blob declares one compressed chunk stored uncompressed (its digest
    /// then that of its compressed bytes): a table that verifies, for the same blob digest, with
    /// another address space. Returns the forged chunk's index.
    static func forgeChunkTable(layout: String, tag: String, newTag: String) throws -> Int {
        func json(_ path: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any] ?? [:]
        }
        func blobPath(_ digest: String) -> String { "\(layout)/blobs/sha256/\(digest.dropFirst("sha256:".count))" }
        func store(_ bytes: [UInt8]) throws -> (digest: String, size: Int) {
            let digest = "sha256:" + hexString(SHA256.hash(bytes))
            try Data(bytes).write(to: URL(fileURLWithPath: blobPath(digest)))
            return (digest, bytes.count)
        }
        var index = try json("\(layout)/index.json")
        var manifests = index["manifests"] as? [[String: Any]] ?? []
        guard let entry = manifests.first(where: { ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] == tag }),
              let manifestDigest = entry["digest"] as? String else { throw TestFailure("no manifest tagged \(tag) in \(layout)") }
        var manifest = try json(blobPath(manifestDigest))
        var layers = manifest["layers"] as? [[String: Any]] ?? []
        guard let at = layers.firstIndex(where: { ($0["mediaType"] as? String ?? "").contains("ferry.bootstrap") }),
              let bootstrapDigest = layers[at]["digest"] as? String else { throw TestFailure("no bootstrap layer") }
        let bootstrap = Array(try Data(contentsOf: URL(fileURLWithPath: blobPath(bootstrapDigest))))
        let (metadata, erofsLength) = try BootstrapMetadata.read(bootstrapAt: blobPath(bootstrapDigest))

        var forged = metadata
        guard let b = forged.blobs.indices.max(by: { forged.blobs[$0].chunks.count < forged.blobs[$1].chunks.count }) else { throw TestFailure("no blobs") }
        guard let i = forged.blobs[b].chunks.indices.first(where: {
            let chunk = forged.blobs[b].chunks[$0]
            return chunk.compression != .none && UInt64(chunk.compressedSize) + blobBlockSize <= UInt64(chunk.uncompressedSize)
        }) else { throw TestFailure("no compressed chunk to forge") }
        // The chunk's compressed bytes, declared stored as they are: they verify against their own
        // digest, and every later chunk moves up in the address space.
        let chunk = forged.blobs[b].chunks[i]
        let blobFile = try FileDescriptor.open(blobPath("sha256:" + forged.blobs[b].hexDigest), .readOnly)
        defer { try? blobFile.close() }
        let raw = try blobFile.read(at: chunk.compressedOffset, count: Int(chunk.compressedSize))
        forged.blobs[b].chunks[i].compression = .none
        forged.blobs[b].chunks[i].uncompressedSize = chunk.compressedSize
        forged.blobs[b].chunks[i].digest = SHA256.hash(raw)
        let newBootstrap = try store(Array(bootstrap.prefix(Int(erofsLength))) + forged.encode(at: erofsLength))
        layers[at]["digest"] = newBootstrap.digest
        layers[at]["size"] = newBootstrap.size
        manifest["layers"] = layers
        let newManifest = try store(Array(try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys])))
        var newEntry = entry
        newEntry["digest"] = newManifest.digest
        newEntry["size"] = newManifest.size
        newEntry["annotations"] = ["org.opencontainers.image.ref.name": newTag]
        manifests.append(newEntry)
        index["manifests"] = manifests
        try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys]).write(to: URL(fileURLWithPath: "\(layout)/index.json"))
        return i
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
