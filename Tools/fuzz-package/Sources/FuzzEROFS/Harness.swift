import EROFS

// A test tool, not part of Ferry: the one unsafe line turns libFuzzer's input into [UInt8].
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    readWholeImage(input)
    return 0
}

/// Opens the bytes as an EROFS image and visits every inode: its xattrs, directory entries,
/// symlink target, chunk indexes and the first 64 KiB of its data (extra devices read as zeros).
func readWholeImage(_ input: [UInt8]) {
    guard let image = try? ImageReader(bytes: input) else { return }
    let zeros: DeviceReader = { _, _, count in [UInt8](repeating: 0, count: count) }
    try? image.walk { _, inode in
        _ = inode.xattrs.count
        switch inode.type {
        case .directory: _ = try? image.entries(of: inode)
        case .symlink: _ = try? image.symlinkTarget(inode)
        default: break
        }
        _ = try? image.chunks(of: inode)
        _ = try? image.read(inode, offset: 0, count: Int(min(inode.size, 64 << 10)), device: zeros)
    }
}
