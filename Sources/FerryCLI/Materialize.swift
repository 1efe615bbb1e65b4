import ArgumentParser
import Converter
import OCI

/// `ferry materialize IMAGE DIR`
struct Materialize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the bootstrap and each blob's uncompressed address space as files.",
        discussion: """
            The result mounts without a daemon. Prefer a file-backed mount (mount(2) with the
            bootstrap file as source and device=FILE options, Linux 6.12+): with loop devices
              mount -t erofs -o ro,loop,device=/dev/loopN DIR/bootstrap.erofs MNT
            the kernel can read a chunk from the wrong device when a file's chunks in two blobs
            are sector-adjacent (Kernel-Notes/erofs-layout.md); 'ferry export' writes one
            self-contained image that loop-mounts safely.
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
