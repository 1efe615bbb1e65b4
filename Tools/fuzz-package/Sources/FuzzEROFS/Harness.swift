import EROFS

// A test tool, not part of Ferry: the one unsafe line turns libFuzzer's input into [UInt8].
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    // mkfs.erofs sets EROFS_FEATURE_COMPAT_SB_CHKSUM (bit 0 of feature_compat, superblock offset
    // 8, erofs_fs.h); with it, almost every mutation of block 0 fails the crc32c and the fuzzer
    // never gets past the superblock. Clearing it lets mutations reach the inodes.
    if input.count > 1024 + 8 { input[1024 + 8] &= ~1 }
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
