import OCI

// A test tool, not part of Ferry: the one unsafe line turns libFuzzer's input into [UInt8].
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    readEveryEntry(input)
    return 0
}

/// Reads a layer's tar stream to the end, entry headers and data, as the converter does.
/// Any thrown error is a clean rejection; only a trap or a sanitizer report is a finding.
func readEveryEntry(_ input: [UInt8]) {
    let reader = TarReader(source: BytesSource(input), layer: "fuzz")
    do {
        while let entry = try reader.next() {
            _ = entry.path.count
            while let piece = try reader.readData(upTo: 4096) { _ = piece.count }
        }
    } catch {}
}
