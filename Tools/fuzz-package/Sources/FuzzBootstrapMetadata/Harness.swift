import Blob
import FerrySystem

// A test tool, not part of Ferry: the one unsafe line turns libFuzzer's input into [UInt8].
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    decodeMetadata(input)
    return 0
}

/// The input is a whole bootstrap tail (section + 64-byte footer). The footer is decoded as
/// given; the section is decoded against a footer that matches it, since a fuzzer cannot forge
/// SHA-256 and would otherwise never get past the checksum. Every chunk table is then queried.
func decodeMetadata(_ input: [UInt8]) {
    if input.count >= BootstrapMetadata.footerSize {
        _ = try? BootstrapMetadata.decodeFooter(Array(input.suffix(BootstrapMetadata.footerSize)), what: "fuzz")
    }
    let section = Array(input.dropLast(min(input.count, BootstrapMetadata.footerSize)))
    let footer = BootstrapMetadata.Footer(sectionOffset: 0, sectionLength: UInt64(section.count),
                                          sectionDigest: SHA256.hash(section))
    guard let metadata = try? BootstrapMetadata.decode(section: section, footer: footer, what: "fuzz") else { return }
    for blob in metadata.blobs {
        for chunk in blob.chunks {
            _ = (chunk.alignedSize, chunk.compressedRange, chunk.uncompressedRange)
        }
        _ = blob.chunkIndexes(overlapping: 0..<blob.uncompressedSize)
        _ = blob.chunkIndexes(overlapping: blob.uncompressedSize / 2..<UInt64.max)
    }
}
