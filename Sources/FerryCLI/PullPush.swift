import ArgumentParser
import Converter
import Foundation
import OCI
import Registry

/// The `--json` summary of `ferry pull` and `ferry push`.
private struct CopySummary: Encodable {
    var source: String
    var target: String
    var manifest: String
    var seconds: Double
    var transfer: TransferTotals
}

private func printCopySummary(_ summary: CopySummary) throws {
    print(String(decoding: try CanonicalJSON.encode(summary), as: UTF8.self))
}

/// `ferry pull docker://… oci:DIR[:TAG]`
struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Copy an image from a registry into a local OCI layout, verifying every blob.")
    @Argument(help: "docker://HOST/REPO[:TAG|@DIGEST]") var source: String
    @Argument(help: "oci:DIR[:TAG]") var target: String
    @Flag(help: "Print a JSON summary instead of a line of text (and no progress bars).") var json = false
    @OptionGroup var registry: RegistryFlags

    func run() throws {
        try reportingErrors {
            guard case let .registry(ref) = try ImageReference(parsing: source) else { throw ValidationError("source must be docker://…") }
            guard case let .ociLayout(path, tag) = try ImageReference(parsing: target) else { throw ValidationError("target must be oci:DIR[:TAG]") }
            let started = Date()
            let progress = TransferProgress(drawing: json ? false : nil)
            let client = try registry.client(observer: progress)
            let digest = try RegistryPull.pull(ref, into: path, tag: tag, client: client)
            if json {
                try printCopySummary(CopySummary(source: source, target: target, manifest: digest.description,
                                                 seconds: Date().timeIntervalSince(started), transfer: progress.totals))
            } else {
                print("pulled \(source) (\(digest)) into \(target)")
            }
        }
    }
}

/// `ferry push oci:DIR[:TAG] docker://…`
struct Push: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Push an image from a local OCI layout to a registry.")
    @Argument(help: "oci:DIR[:TAG]") var source: String
    @Argument(help: "docker://HOST/REPO[:TAG]") var target: String
    @Flag(help: "Print a JSON summary instead of a line of text (and no progress bars).") var json = false
    @OptionGroup var registry: RegistryFlags

    func run() throws {
        try reportingErrors {
            guard case let .ociLayout(path, tag) = try ImageReference(parsing: source) else { throw ValidationError("source must be oci:DIR[:TAG]") }
            guard case let .registry(ref) = try ImageReference(parsing: target) else { throw ValidationError("target must be docker://…") }
            let started = Date()
            let progress = TransferProgress(drawing: json ? false : nil)
            let resolved = try OCILayoutSource(directory: path, tag: tag).resolve(platform: nil)
            let uploads = (resolved.manifest.layers + [resolved.manifest.config]).map { descriptor in
                BlobUpload(path: path + "/blobs/\(descriptor.digest.algorithm)/\(descriptor.digest.hex)", descriptor: descriptor)
            }
            let client = try registry.client(observer: progress)
            let manifest = resolved.manifestBytes, mediaType = resolved.manifest.mediaType ?? MediaType.ociManifest
            let digest = try waitForRegistry { try await client.pushImage(blobs: uploads, manifest: manifest, mediaType: mediaType, to: ref) }
            if json {
                try printCopySummary(CopySummary(source: source, target: target, manifest: digest.description,
                                                 seconds: Date().timeIntervalSince(started), transfer: progress.totals))
            } else {
                print("pushed \(source) to \(target) (\(digest))")
            }
        }
    }
}

/// `ferry pull`: blobs stream from the registry straight into the new layout's blob directory
/// (each verified by the client against its digest while it arrives), a few at a time, then
/// the manifest and `index.json`; the layout appears by rename only when complete.
enum RegistryPull {
    /// Blobs downloaded at once.
    static let parallelBlobs = 3

    static func pull(_ ref: RegistryReference, into path: String, tag: String?, client: RegistryClient) throws -> Digest {
        let target = OCILayoutTarget(path: path, tag: tag)
        let work = try target.makeWorkDirectory()
        do {
            let resolved = try waitFor { try await client.resolveManifest(ref) }
            let blobs = work + "/blobs/sha256/"
            let descriptors = [resolved.manifest.config] + resolved.manifest.layers
            try waitFor {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    var next = 0
                    func start() {
                        let d = descriptors[next]
                        next += 1
                        group.addTask { try await client.fetchBlob(ref, digest: d.digest, to: blobs + d.digest.hex, expectedSize: d.size) }
                    }
                    while next < min(parallelBlobs, descriptors.count) { start() }
                    while try await group.next() != nil { if next < descriptors.count { start() } }
                }
            }
            try Data(resolved.bytes).write(to: URL(fileURLWithPath: blobs + resolved.digest.hex))
            try OCILayoutTarget.writeIndex(in: work, manifest: Descriptor(mediaType: resolved.mediaType, digest: resolved.digest,
                                                                          size: Int64(resolved.bytes.count)), tag: tag)
            try FileManager.default.moveItem(atPath: work, toPath: path)
            return resolved.digest
        } catch {
            try? FileManager.default.removeItem(atPath: work)
            throw error
        }
    }
}
