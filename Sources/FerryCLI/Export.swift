import ArgumentParser
import Converter
import OCI

/// `ferry export IMAGE OUT.erofs`
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a self-contained EROFS image (mountable with mount -o loop) from a converted image.")
    @Argument(help: "A converted image (oci:DIR[:TAG]).") var image: String
    @Argument(help: "The EROFS image file to write.") var output: String

    func run() throws {
        try reportingErrors {
            let ferryImage = try FerryImage.open(try ImageReference(parsing: image))
            try Exporter.export(ferryImage, to: output)
            print("exported \(image) to \(output)")
        }
    }
}
