import ArgumentParser
import Converter
import Foundation
import OCI
import Registry

/// `ferry pull docker://… oci:DIR[:TAG]`
struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Copy an image from a registry into a local OCI layout, verifying every blob.")
    @Argument(help: "docker://HOST/REPO[:TAG|@DIGEST]") var source: String
    @Argument(help: "oci:DIR[:TAG]") var target: String
    @OptionGroup var registry: RegistryFlags

    func run() throws {
        try reportingErrors {
            guard case let .registry(ref) = try ImageReference(parsing: source) else { throw ValidationError("source must be docker://…") }
            guard case let .ociLayout(path, tag) = try ImageReference(parsing: target) else { throw ValidationError("target must be oci:DIR[:TAG]") }
            let scratch = try makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let digest = try ImageCopy.pull(from: RegistryImageSource(client: RegistryClient(options: registry.options()), reference: ref,
                                                                      scratch: scratch), into: path, tag: tag)
            print("pulled \(source) (\(digest)) into \(target)")
        }
    }
}

/// `ferry push oci:DIR[:TAG] docker://…`
struct Push: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Push an image from a local OCI layout to a registry.")
    @Argument(help: "oci:DIR[:TAG]") var source: String
    @Argument(help: "docker://HOST/REPO[:TAG]") var target: String
    @OptionGroup var registry: RegistryFlags

    func run() throws {
        try reportingErrors {
            guard case let .ociLayout(path, tag) = try ImageReference(parsing: source) else { throw ValidationError("source must be oci:DIR[:TAG]") }
            guard case let .registry(ref) = try ImageReference(parsing: target) else { throw ValidationError("target must be docker://…") }
            let digest = try ImageCopy.push(from: try OCILayoutSource(directory: path, tag: tag), layoutPath: path, to: ref,
                                            client: RegistryClient(options: registry.options()))
            print("pushed \(source) to \(target) (\(digest))")
        }
    }
}
