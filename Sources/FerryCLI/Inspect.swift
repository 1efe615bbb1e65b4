import ArgumentParser
import Converter
import Foundation
import OCI
import Registry

/// `ferry inspect IMAGE`
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Summarize a converted image, or list its tree.")
    @Argument(help: "A converted image: oci:DIR[:TAG], or docker://HOST/REPO[:TAG|@DIGEST] (reads only its manifest, config and bootstrap).")
    var image: String
    @Option(help: "List the tree below this path instead of the summary.") var tree: String?
    @Option(help: "List where each chunk of this file is stored instead of the summary.") var chunks: String?
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var registry: RegistryFlags

    func run() throws {
        try reportingErrors {
            let reference = try ImageReference(parsing: image)
            var scratch: String?
            defer { if let scratch { try? FileManager.default.removeItem(atPath: scratch) } }
            let ferryImage: FerryImage
            if case let .registry(ref) = reference {
                let directory = try makeScratchDirectory()
                scratch = directory
                ferryImage = try FerryImage.open(try RemoteBootstrap.fetch(ref, client: try registry.client(), into: directory + "/image"))
            } else {
                ferryImage = try FerryImage.open(reference)
            }
            if let chunks {
                let rows = try ImageInspector.chunks(ferryImage, of: chunks)
                if json {
                    print(String(decoding: try CanonicalJSON.encode(rows), as: UTF8.self))
                } else {
                    for r in rows {
                        print("chunk \(r.index): " + (r.blob.map { "blob \($0.prefix(12)) at \(r.compressedOffset)+\(r.compressedSize) (\(r.compression)), \(r.uncompressedSize) bytes" } ?? "hole"))
                    }
                }
                return
            }
            if let tree {
                for line in try ImageInspector.tree(ferryImage, below: tree) { print(line) }
                return
            }
            let s = try ImageInspector.summarize(ferryImage)
            if json {
                print(String(decoding: try CanonicalJSON.encode(s), as: UTF8.self))
                return
            }
            print("image       \(s.manifest)" + (s.sourceManifest.map { " (from \($0))" } ?? ""))
            print("chunks      \(s.chunkSize) bytes, \(s.compression)")
            print("bootstrap   \(s.bootstrapBytes) bytes (EROFS \(s.erofsBytes)), \(s.inodes) inodes: \(s.regularFiles) files, \(s.directories) dirs, \(s.symlinks) symlinks")
            print("data        \(s.fileBytes) bytes in files; \(s.storedChunkBytes) bytes of distinct chunks, \(s.compressedBytes) compressed")
            print(String(format: "dedup       %.3f× (referenced / stored)", s.dedupRatio))
            for b in s.blobs {
                print("blob        \(b.digest)  \(b.chunks) chunks, \(b.compressedBytes) bytes (\(b.uncompressedBytes) uncompressed)")
            }
            if !s.prefetch.isEmpty { print("prefetch    \(s.prefetch.joined(separator: ", "))") }
        }
    }
}

/// The metadata of a converted image in a registry, fetched into a local OCI layout that has
/// the manifest, the config and the bootstrap, but none of the data blobs: what `inspect`
/// needs (`--chunks` only reports where chunks live; it reads no chunk).
enum RemoteBootstrap {
    static func fetch(_ ref: RegistryReference, client: RegistryClient, into path: String) throws -> ImageReference {
        let blobs = path + "/blobs/sha256/"
        try FileManager.default.createDirectory(atPath: blobs, withIntermediateDirectories: true)
        let resolved = try waitFor { try await client.resolveManifest(ref) }
        guard let bootstrap = resolved.manifest.layers.last(where: {
            MediaType.isFerryBootstrap($0)
        }) else {
            throw ValidationError("\(ref) is not a converted image: no layer is a Ferry bootstrap")
        }
        let manifest = resolved.manifest
        let config = try waitFor { try await client.fetchConfig(ref, manifest: manifest) }
        try Data(config).write(to: URL(fileURLWithPath: blobs + manifest.config.digest.hex))
        try Data(resolved.bytes).write(to: URL(fileURLWithPath: blobs + resolved.digest.hex))
        _ = try waitFor { try await client.fetchBlob(ref, digest: bootstrap.digest, to: blobs + bootstrap.digest.hex, expectedSize: bootstrap.size) }
        try OCILayoutTarget.writeIndex(in: path, manifest: Descriptor(mediaType: resolved.mediaType, digest: resolved.digest,
                                                                      size: Int64(resolved.bytes.count)), tag: nil)
        return .ociLayout(path: path, tag: nil)
    }
}
