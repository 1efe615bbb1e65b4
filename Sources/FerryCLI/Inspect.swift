import ArgumentParser
import Converter
import Foundation
import OCI

/// `ferry inspect IMAGE`
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Summarize a converted image, or list its tree.")
    @Argument(help: "A converted image (oci:DIR[:TAG]).") var image: String
    @Option(help: "List the tree below this path instead of the summary.") var tree: String?
    @Option(help: "List where each chunk of this file is stored instead of the summary.") var chunks: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        try reportingErrors {
            let ferryImage = try FerryImage.open(try ImageReference(parsing: image))
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
