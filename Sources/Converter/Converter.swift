public import Blob
public import OCI
import EROFS
import FerrySystem
import Foundation

/// What a regular file of the merged tree carries: its bytes inline, or the number of its row
/// in the chunk-reference table that the pipeline fills in.
enum FilePayload: Sendable {
    case inline([UInt8])
    case chunked(file: Int)
}

/// Chunk references of every chunked file, filled in by the pipeline's commit step.
final class FileChunkTable {
    var rows: [[ChunkReference]] = []

    func addFile(chunkCount: Int) -> Int {
        rows.append([ChunkReference](repeating: .hole, count: chunkCount))
        return rows.count - 1
    }
}

/// One data blob of a converted image.
public struct ConvertedBlob: Sendable {
    public var info: BlobInfo
    /// Where the blob file is now.
    public var path: String
    public var descriptor: Descriptor
    /// True when it belongs to a chunk dictionary image (already stored elsewhere).
    public var fromDictionary: Bool
}

/// Figures about a conversion, for `--json` and the summary line.
public struct ConversionSummary: Sendable, Codable {
    public var layers = 0
    public var files = 0
    public var inlineFiles = 0
    public var uncompressedBytes: UInt64 = 0
    public var chunks = 0
    public var dedupedChunks = 0
    public var dedupedBytes: UInt64 = 0
    public var zeroChunks = 0
    public var blobCompressedBytes: UInt64 = 0
    public var bootstrapBytes: UInt64 = 0
    public var sourceLayerBytes: UInt64 = 0
}

/// The result of converting one image, before it is written to a target.
public struct ConvertedImage: Sendable {
    public var bootstrapPath: String
    public var bootstrapDescriptor: Descriptor
    public var blobs: [ConvertedBlob]
    public var config: [UInt8]
    public var configDescriptor: Descriptor
    public var manifest: Manifest
    public var manifestBytes: [UInt8]
    public var manifestDigest: Digest
    public var summary: ConversionSummary
}

/// Turns an OCI image into a Ferry image: one EROFS bootstrap and one chunked data blob per
/// source layer that has new data.
public enum Converter {
    /// Converts the image `source` resolves to for `options.platform`.
    ///
    /// - Parameters:
    ///   - workDirectory: an existing empty directory; blobs and the bootstrap are written there
    ///     (place it on the target's filesystem so the writer can rename instead of copying).
    ///   - progress: called with (layer index, layer count, descriptor) as each layer starts.
    public static func convert(source: any ImageSource, options: ConversionOptions, workDirectory: String,
                               progress: (Int, Int, Descriptor) -> Void = { _, _, _ in }) throws -> ConvertedImage {
        let chunkLog2 = try options.chunkSizeLog2()
        let chunkSize = Int(options.chunkSize)
        guard options.inlineLimit >= 0, options.inlineLimit <= 4096 - 128 else {
            throw ConversionError.invalidOption("--inline-limit must be between 0 and 3968 bytes")
        }
        let image = try source.resolve(platform: options.platform)
        var summary = ConversionSummary()
        summary.layers = image.manifest.layers.count

        let assembler = BlobAssembler(scratchDirectory: workDirectory, zeroChunksAsHoles: options.zeroChunksAsHoles)
        var dictionaryDescriptors: [[UInt8]: Descriptor] = [:]
        for dictionary in options.chunkDictionaries {
            for (i, blob) in dictionary.metadata.blobs.enumerated() where i < dictionary.blobPaths.count {
                assembler.addDictionary(blob: blob, path: dictionary.blobPaths[i])
                if i < dictionary.blobDescriptors.count { dictionaryDescriptors[blob.digest] = dictionary.blobDescriptors[i] }
            }
        }
        let table = FileChunkTable()
        let pipeline = ChunkPipeline<(file: Int, chunk: Int)>(compression: options.compression, window: options.pipelineWindow,
                                                              largestChunk: chunkSize) { chunk, tag in
            table.rows[tag.file][tag.chunk] = try assembler.place(chunk)
        }
        var tree = MergedTree<FilePayload>()

        do {
            for (layerIndex, layer) in image.manifest.layers.enumerated() {
                progress(layerIndex, image.manifest.layers.count, layer)
                summary.sourceLayerBytes += UInt64(max(0, layer.size))
                let layerName = layer.digest.description
                assembler.beginLayer()
                tree.beginLayer(name: layerName)
                let reader = TarReader(source: try source.openLayer(layer), layer: layerName)
                while let entry = try reader.next() {
                    var payload: FilePayload?
                    if entry.kind == .regular {
                        let size = UInt64(max(0, entry.size))
                        summary.files += 1
                        summary.uncompressedBytes += size
                        if size <= UInt64(options.inlineLimit) {
                            payload = .inline(try readAll(reader, count: Int(size), entry: entry, layer: layerName))
                            summary.inlineFiles += 1
                        } else {
                            let chunkCount = Int((size + UInt64(chunkSize) - 1) / UInt64(chunkSize))
                            let file = table.addFile(chunkCount: chunkCount)
                            for chunk in 0..<chunkCount {
                                let want = Int(min(UInt64(chunkSize), size - UInt64(chunk) * UInt64(chunkSize)))
                                var buffer = pipeline.takeBuffer(capacity: want)
                                try fill(&buffer, from: reader, count: want, entry: entry, layer: layerName)
                                try pipeline.submit(buffer, tag: (file, chunk))
                            }
                            payload = .chunked(file: file)
                        }
                    }
                    try tree.apply(entry, payload: payload)
                }
                try pipeline.drain()
                try assembler.endLayer()
                tree.endLayer()
            }
        } catch {
            assembler.abandon()
            throw error
        }
        summary.chunks = assembler.chunksSeen
        summary.dedupedChunks = assembler.chunksDeduplicated
        summary.dedupedBytes = assembler.bytesDeduplicated
        summary.zeroChunks = assembler.zeroChunks

        // Name each written blob by its digest.
        var blobs: [ConvertedBlob] = []
        for device in assembler.devices {
            let digest = Digest(sha256: device.info.digest)
            var path = device.path
            if !device.fromDictionary {
                path = "\(workDirectory)/blob-\(digest.hex)"
                try rename(device.path, to: path)
                summary.blobCompressedBytes += device.info.compressedSize
            }
            var descriptor = dictionaryDescriptors[device.info.digest] ?? Descriptor(
                mediaType: MediaType.ferryBlob, digest: digest, size: Int64(device.info.compressedSize),
                annotations: [FerryAnnotation.chunkSize: String(options.chunkSize),
                              FerryAnnotation.compressor: options.compression.description,
                              FerryAnnotation.uncompressedSize: String(device.info.uncompressedSize)])
            // A blob reused from a chunk dictionary converted before 0.4 gets today's layer type.
            descriptor.mediaType = MediaType.ferryBlob
            descriptor.annotations = (descriptor.annotations ?? [:]).merging([FerryAnnotation.snapshotLayer: "blob"]) { $1 }
            blobs.append(ConvertedBlob(info: device.info, path: path, descriptor: descriptor, fromDictionary: device.fromDictionary))
        }

        // The bootstrap: EROFS metadata, then the chunk tables.
        let imageTree = try TreeLayout.imageTree(from: tree, chunks: table, chunkSizeLog2: chunkLog2, blobs: blobs.map(\.info),
                                                 seed: image.manifestDigest.description + "\(options.chunkSize)\(options.compression)")
        // The merged tree and the chunk references are in `imageTree` now; letting them go before
        // encoding keeps them from adding to the peak (with 300,000 files, ~60 MB).
        tree = MergedTree<FilePayload>()
        table.rows = []
        Heap.returnFreedMemory()
        // The two parts are hashed and written one after the other, never joined: for an image of
        // 300,000 files they are 27 + 24 MB, and joining them cost a third copy of both at peak.
        let erofsPart = try ImageWriter.encodeBootstrap(imageTree)
        let metadata = BootstrapMetadata(chunkSizeLog2: chunkLog2, compression: options.compression, blobs: blobs.map(\.info),
                                         prefetch: options.prefetch.map { Array($0.utf8.drop(while: { $0 == UInt8(ascii: "/") })) })
        let metadataPart = metadata.encode(at: UInt64(erofsPart.count))
        let bootstrapHash = SHA256()
        bootstrapHash.update(erofsPart)
        bootstrapHash.update(metadataPart)
        let bootstrapDigest = Digest(sha256: bootstrapHash.finalize())
        let bootstrapPath = "\(workDirectory)/bootstrap-\(bootstrapDigest.hex)"
        try writeFile([erofsPart, metadataPart], to: bootstrapPath)
        let bootstrapSize = erofsPart.count + metadataPart.count
        summary.bootstrapBytes = UInt64(bootstrapSize)
        let bootstrapDescriptor = Descriptor(
            mediaType: MediaType.ferryBootstrap, digest: bootstrapDigest, size: Int64(bootstrapSize),
            annotations: [FerryAnnotation.bootstrap: "true", FerryAnnotation.chunkSize: String(options.chunkSize),
                          FerryAnnotation.compressor: options.compression.description,
                          FerryAnnotation.snapshotLayer: "bootstrap"])

        let layers = blobs.map(\.descriptor) + [bootstrapDescriptor]
        let config = try FerryConfig.rewrite(image.configBytes, layers: layers, what: "config of \(image.manifestDigest)")
        let configDescriptor = Descriptor(mediaType: MediaType.ociConfig, digest: Digest(sha256: SHA256.hash(config)),
                                          size: Int64(config.count))
        let manifest = Manifest(config: configDescriptor, layers: layers,
                                annotations: [FerryAnnotation.sourceManifest: image.manifestDigest.description])
        let manifestBytes = try CanonicalJSON.encode(manifest)
        return ConvertedImage(bootstrapPath: bootstrapPath, bootstrapDescriptor: bootstrapDescriptor, blobs: blobs,
                              config: config, configDescriptor: configDescriptor, manifest: manifest,
                              manifestBytes: manifestBytes, manifestDigest: Digest(sha256: SHA256.hash(manifestBytes)),
                              summary: summary)
    }

    /// Appends exactly `count` bytes of the current entry's data to `buffer`.
    private static func fill(_ buffer: inout [UInt8], from reader: TarReader, count: Int, entry: TarEntry, layer: String) throws {
        var remaining = count
        while remaining > 0 {
            guard let piece = try reader.readData(upTo: remaining), !piece.isEmpty else {
                throw OCIError.malformedTar(layer: layer, entry: entry.displayPath, reason: "data ends early")
            }
            buffer.append(contentsOf: piece)
            remaining -= piece.count
        }
    }

    private static func readAll(_ reader: TarReader, count: Int, entry: TarEntry, layer: String) throws -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count)
        try fill(&out, from: reader, count: count, entry: entry, layer: layer)
        return out
    }
}

/// Writes `bytes` to a new file at `path`.
func writeFile(_ bytes: [UInt8], to path: String) throws {
    try writeFile([bytes], to: path)
}

/// Writes `parts`, one after the other, to a new file at `path`.
func writeFile(_ parts: [[UInt8]], to path: String) throws {
    let fd = try FileDescriptor.open(path, .createTruncate)
    do {
        for part in parts { try fd.write(part) }
        try fd.close()
    } catch {
        try? fd.close()
        throw error
    }
}

/// Renames a file, mapping failure to a clear error.
func rename(_ from: String, to: String) throws {
    do {
        try FileManager.default.moveItem(atPath: from, toPath: to)
    } catch {
        throw ConversionError.io(path: from, reason: "cannot move to \(to): \(error.localizedDescription)")
    }
}
