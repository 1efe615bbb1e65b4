import ArgumentParser
import Blob
import Converter
import Foundation
import OCI
import Registry

/// `ferry convert SOURCE TARGET`
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an OCI image into a Ferry image (EROFS bootstrap + chunked blobs).",
        discussion: """
            SOURCE and TARGET use containers-image transport names: oci:DIR[:TAG], \
            docker-archive:FILE.tar (source only) and docker://HOST/REPO[:TAG].
            """)

    @Argument(help: "The image to convert.") var source: String
    @Argument(help: "Where to write the converted image.") var target: String
    @Option(help: "Chunk size: a power of two from 4KiB to 16MiB.") var chunkSize: String = "1MiB"
    @Option(help: "Chunk compression: lz4, zstd or none.") var compressor: String = "lz4"
    @Option(help: "Store regular files up to this many bytes inside the bootstrap (0 = none).") var inlineLimit: Int = 0
    @Option(help: "A converted image (oci:DIR[:TAG]) whose chunks may be reused.") var chunkDict: [String] = []
    @Option(help: "Platform to pick from a multi-platform image, os/arch[/variant].") var platform: String?
    @Option(help: "A path to record in the image's prefetch list (repeatable).") var prefetch: [String] = []
    @Flag(help: "Write all-zero chunks as EROFS holes (not for the fscache backend: Linux zero-fills past a hole within one read).")
    var holes = false
    @Flag(help: "Print a JSON summary instead of a line of text.") var json = false
    @OptionGroup var registry: RegistryFlags

    func run() throws {
        try reportingErrors {
            var options = ConversionOptions()
            options.chunkSize = try parseSize(chunkSize)
            options.zeroChunksAsHoles = holes
            guard let compression = ChunkCompression(name: compressor) else {
                throw ValidationError("unknown compressor \"\(compressor)\" (use lz4, zstd or none)")
            }
            options.compression = compression
            options.inlineLimit = inlineLimit
            if let platform { options.platform = try Platform(parsing: platform) }
            options.prefetch = prefetch
            options.chunkDictionaries = try chunkDict.map { try FerryImage.open(try ImageReference(parsing: $0)).chunkDictionary() }
            _ = try options.chunkSizeLog2()

            let progress = TransferProgress(drawing: json ? false : nil)
            let client = try registry.client(observer: progress)
            let scratch = try makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let sourceReference = try ImageReference(parsing: source)
            let sourceImage: any ImageSource
            if case let .registry(ref) = sourceReference {
                sourceImage = RegistryImageSource(client: client, reference: ref, scratch: scratch)
            } else {
                sourceImage = try ImageSources.open(sourceReference)
            }
            let started = Date()
            switch try ImageReference(parsing: target) {
            case let .ociLayout(path, tag):
                let output = OCILayoutTarget(path: path, tag: tag)
                let work = try output.makeWorkDirectory()
                do {
                    let converted = try Converter.convert(source: sourceImage, options: options, workDirectory: work)
                    try output.commit(converted, workDirectory: work)
                    printSummary(converted, seconds: Date().timeIntervalSince(started), transfer: progress.totals)
                } catch {
                    try? FileManager.default.removeItem(atPath: work)
                    throw error
                }
            case let .registry(ref):
                let work = scratch + "/out"
                try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
                let converted = try Converter.convert(source: sourceImage, options: options, workDirectory: work)
                let uploads = converted.blobs.map { BlobUpload(path: $0.path, descriptor: $0.descriptor) }
                    + [BlobUpload(path: converted.bootstrapPath, descriptor: converted.bootstrapDescriptor)]
                let config = converted.config, manifest = converted.manifestBytes
                _ = try waitForRegistry {
                    try await client.pushImage(blobs: uploads, config: config, manifest: manifest, mediaType: MediaType.ociManifest, to: ref)
                }
                printSummary(converted, seconds: Date().timeIntervalSince(started), transfer: progress.totals)
            case .dockerArchive:
                throw ValidationError("target \(target): docker-archive: is a source only; write oci:DIR[:TAG] or docker://…")
            }
        }
    }

    private func printSummary(_ image: ConvertedImage, seconds: Double, transfer: TransferTotals) {
        let s = image.summary
        if json {
            struct Output: Encodable {
                var manifest: String
                var bootstrap: String
                var blobs: [String]
                var seconds: Double
                var summary: ConversionSummary
                var transfer: TransferTotals
            }
            let out = Output(manifest: image.manifestDigest.description, bootstrap: image.bootstrapDescriptor.digest.description,
                             blobs: image.blobs.map(\.descriptor.digest.description), seconds: seconds, summary: s, transfer: transfer)
            if let bytes = try? CanonicalJSON.encode(out) { print(String(decoding: bytes, as: UTF8.self)) }
            return
        }
        let mb = Double(s.uncompressedBytes) / 1e6
        print("""
            converted \(source) -> \(target) in \(String(format: "%.2f", seconds)) s (\(String(format: "%.0f", mb / max(seconds, 1e-9))) MB/s)
              layers \(s.layers), files \(s.files), data \(s.uncompressedBytes) bytes in \(s.chunks) chunks
              deduplicated \(s.dedupedChunks) chunks (\(s.dedupedBytes) bytes), zero chunks \(s.zeroChunks)
              blobs \(image.blobs.count) (\(s.blobCompressedBytes) bytes), bootstrap \(s.bootstrapBytes) bytes
              manifest \(image.manifestDigest)
            """)
    }
}
