/// Directory blocks (fs/erofs/dir.c, namei.c): each block holds dirents then names; no name
/// crosses a block. Blocks are filled greedily in sorted order, so both the first names of
/// successive blocks and the names inside a block ascend, as the kernel's two-level binary
/// search needs. The directory's `i_size` ends right after the last name of the last block.
struct DirectoryLayout {
    /// Index into the sorted entries where each block starts.
    var blockStarts: [Int]
    /// Bytes used in the last block.
    var lastBlockBytes: Int
    /// Total entries.
    var entryCount: Int

    var size: UInt64 { UInt64(blockStarts.count - 1) * UInt64(Layout.blockSize) + UInt64(lastBlockBytes) }

    init(_ entries: [WriterTree.Entry]) {
        var starts = [0]
        var used = 0
        for (index, entry) in entries.enumerated() {
            let need = Dirent.size + entry.name.count
            if used + need > Layout.blockSize {
                starts.append(index)
                used = 0
            }
            used += need
        }
        blockStarts = starts
        lastBlockBytes = used
        entryCount = entries.count
    }

    /// The range of entries in block `block`.
    func entryRange(ofBlock block: Int) -> Range<Int> {
        blockStarts[block]..<(block + 1 < blockStarts.count ? blockStarts[block + 1] : entryCount)
    }

    /// Writes block `block` at `offset` of `buffer`: dirents with `nids` and types, then names.
    /// Unused bytes stay zero, which ends the last name of a full block for `strnlen`.
    func writeBlock(_ block: Int, entries: [WriterTree.Entry], nids: [UInt64], types: [UInt8],
                    into buffer: inout [UInt8], at offset: Int) {
        let range = entryRange(ofBlock: block)
        var nameOffset = Dirent.size * range.count
        for (slot, index) in range.enumerated() {
            let entry = entries[index]
            Dirent(nid: nids[entry.node], nameOffset: UInt16(nameOffset), fileType: types[entry.node])
                .encode(into: &buffer, at: offset + slot * Dirent.size)
            buffer.storeBytes(entry.name, at: offset + nameOffset)
            nameOffset += entry.name.count
        }
    }
}
