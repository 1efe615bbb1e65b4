import ArgumentParser
import Converter
import Foundation
import OCI

/// `ferry check IMAGE`
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify a converted image: bootstrap structure, chunk references and every chunk digest.")
    @Argument(help: "A converted image (oci:DIR[:TAG]).") var image: String

    func run() throws {
        try reportingErrors {
            let ferryImage = try FerryImage.open(try ImageReference(parsing: image))
            let r = try ImageChecker.check(ferryImage)
            print("ok: \(r.inodes) inodes, \(r.regularFiles) files, \(r.chunkReferences) chunk references (\(r.holes) holes), "
                + "\(r.blobs) blobs, \(r.chunksVerified) chunks verified")
        }
    }
}
