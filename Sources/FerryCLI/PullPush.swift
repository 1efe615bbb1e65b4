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
            let scratch = try makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let started = Date()
            let progress = TransferProgress(drawing: json ? false : nil)
            let client = try registry.client(observer: progress)
            let digest = try ImageCopy.pull(from: RegistryImageSource(client: client, reference: ref, scratch: scratch), into: path, tag: tag)
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
            let digest = try ImageCopy.push(from: try OCILayoutSource(directory: path, tag: tag), layoutPath: path, to: ref,
                                            client: try registry.client(observer: progress))
            if json {
                try printCopySummary(CopySummary(source: source, target: target, manifest: digest.description,
                                                 seconds: Date().timeIntervalSince(started), transfer: progress.totals))
            } else {
                print("pushed \(source) to \(target) (\(digest))")
            }
        }
    }
}
