import Foundation
import Testing
@testable import EROFS

/// A RAFS v6 bootstrap made by nydus-image 2.2 (shared test data): an EROFS image whose
/// files are chunk-based on one extra device, the blob, whose id is the device tag.
@Suite struct NydusBootstrapTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/testdata/nydus").path
    static let blobID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"

    @Test func readsTheDeviceTableAndWalksTheTree() throws {
        let path = Self.directory + "/rafs-v6-2.2.boot"
        guard FileManager.default.fileExists(atPath: path) else {
            print("skipping: \(path) is missing")
            return
        }
        let reader = try ImageReader(path: path)
        #expect(reader.devices.count == 1)
        #expect(reader.devices.first?.tag == Array(Self.blobID.utf8))
        #expect(reader.superBlock.featureIncompat & Layout.featureIncompatDeviceTable != 0)
        var count = 0
        var types: [FileType: Int] = [:]
        var chunkedFiles = 0
        try reader.walk { path, inode in
            count += 1
            types[inode.type, default: 0] += 1
            switch inode.type {
            case .regular where inode.size > 0:
                guard case .chunked = inode.layout else {
                    Issue.record("\(printable(path)): expected chunk-based data, got \(inode.layout)")
                    return
                }
                chunkedFiles += 1
                let chunks = try reader.chunks(of: inode)
                #expect(chunks.allSatisfy { chunk in
                    if case .stored(device: 1, _) = chunk { return true }
                    return chunk == .hole
                }, "\(printable(path))")
            case .symlink:
                #expect(try !reader.symlinkTarget(inode).isEmpty)
            case .directory:
                let names = try reader.entries(of: inode).map(\.name)
                #expect(names == names.sorted { $0.lexicographicallyPrecedes($1) }, "\(printable(path)) is not sorted")
            default:
                break
            }
        }
        #expect(count > 1)
        #expect(chunkedFiles > 0)
        #expect(types[.directory, default: 0] > 0)
        print("nydus bootstrap: \(count) paths, \(types), \(chunkedFiles) chunk-based files")
    }
}
