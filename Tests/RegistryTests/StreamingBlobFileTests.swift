import FerrySystem
import Foundation
import OCI
@testable import Registry
import Testing

/// A download's pieces go to the file and the hash on two threads, in buffers that come back to
/// the pool for the next pieces: every byte must still land once, in order.
@Suite struct StreamingBlobFileTests {
    /// Piece `index`'s bytes: a length that varies around the pool's piece size and content
    /// that differs from every other piece's, so a buffer reused too early shows.
    static func piece(_ index: Int, pieceBytes: Int) -> [UInt8] {
        let length = index % 5 == 4 ? pieceBytes / 3 + index : pieceBytes - (index % 3) * 100
        var state = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<length).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }

    @Test(arguments: [1, 2, 8])
    func recycledBuffersCarryEveryPieceOnceInOrder(slots: Int) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-sbf-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/blob"
        let pieceBytes = 64 * 1024
        let file = try StreamingBlobFile(path: path, slots: slots, pieceBytes: pieceBytes)
        var expected: [UInt8] = []
        for index in 0..<400 {
            // As curl's receiving side does: gather into a pooled buffer, hand it over, let go.
            var buffer = file.pieceBuffers.take()
            #expect(buffer.isEmpty && buffer.capacity >= pieceBytes)
            let bytes = Self.piece(index, pieceBytes: pieceBytes)
            buffer.append(contentsOf: bytes)
            expected += bytes
            try file.append(buffer[...])
            buffer = []
        }
        let digest = try file.digest()
        file.close()
        #expect(digest == Digest(sha256: SHA256.hash(expected)))
        let written = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(written.count == expected.count)
        let firstDifference = written.indices.first { $0 >= expected.count || written[$0] != expected[$0] }
        #expect(firstDifference == nil, "the file differs from the appended pieces at byte \(firstDifference ?? -1)")
        // The consumers gave buffers back (empty, full size), so the receiving side reuses them.
        #expect(file.pieceBuffers.idleCount > 0)
        let reused = file.pieceBuffers.take()
        #expect(reused.isEmpty && reused.capacity >= pieceBytes)
    }
}
