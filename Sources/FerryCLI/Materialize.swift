import ArgumentParser
import Converter
import OCI

/// `ferry materialize IMAGE DIR`
struct Materialize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the bootstrap and each blob's uncompressed address space as files.",
        discussion: """
            The result mounts without a daemon, e.g. with loop devices:
              mount -t erofs -o ro,loop,device=/dev/loopN DIR/bootstrap.erofs MNT
            Prints the written paths, bootstrap first, then devices in device order.
            """)

    @Argument(help: "A converted image (oci:DIR[:TAG]).") var image: String
    @Argument(help: "Directory to write into.") var directory: String

    func run() throws {
        try reportingErrors {
            let ferryImage = try FerryImage.open(try ImageReference(parsing: image))
            for path in try Materializer.materialize(ferryImage, into: directory) { print(path) }
        }
    }
}
