extension ImageReader {
    /// Decodes an inode's xattr area (header, shared ids, inline entries) at `offset`.
    func readXattrs(nid: UInt64, at offset: UInt64, areaSize: Int) throws -> [ExtendedAttribute] {
        guard areaSize > XattrBodyHeader.size else { return [] }
        let area = try source.read(at: offset, count: areaSize, what: "xattrs of nid \(nid)")
        let header = try XattrBodyHeader.decode(area, at: 0)
        var cursor = XattrBodyHeader.size + 4 * Int(header.sharedCount)
        guard cursor <= areaSize else {
            throw EROFSError.corrupt(what: "xattrs of nid \(nid)",
                                     reason: "\(header.sharedCount) shared xattr ids overflow the \(areaSize)-byte area")
        }
        var result = [ExtendedAttribute]()
        for index in 0..<Int(header.sharedCount) {
            let id = area.loadLE32(at: XattrBodyHeader.size + 4 * index)
            result.append(try sharedXattr(id: id, nid: nid))
        }
        while cursor < areaSize {
            let (xattr, size) = try decodeXattr(area, at: cursor, limit: areaSize, what: "inline xattr of nid \(nid)")
            result.append(xattr)
            cursor += size
        }
        return result
    }

    private func sharedXattr(id: UInt32, nid: UInt64) throws -> ExtendedAttribute {
        let offset = (UInt64(superBlock.xattrBlockAddress) << UInt64(superBlock.blockSizeBits)) + UInt64(id) * 4
        let what = "shared xattr \(id) of nid \(nid)"
        let header = try XattrEntryHeader.decode(try source.read(at: offset, count: XattrEntryHeader.size, what: what), at: 0)
        let bytes = try source.read(at: offset, count: header.entrySize, what: what)
        return try decodeXattr(bytes, at: 0, limit: bytes.count, what: what).0
    }

    /// One `erofs_xattr_entry` with name and value at `offset`; returns it and its padded size.
    private func decodeXattr(_ bytes: [UInt8], at offset: Int, limit: Int, what: String) throws -> (ExtendedAttribute, Int) {
        guard limit - offset >= XattrEntryHeader.size else {
            throw EROFSError.corrupt(what: what, reason: "entry header crosses the end of the xattr area")
        }
        let header = try XattrEntryHeader.decode(bytes, at: offset)
        guard header.entrySize <= limit - offset else {
            throw EROFSError.corrupt(what: what, reason: "entry of \(header.entrySize) bytes overflows the xattr area")
        }
        let prefix: [UInt8]
        if let known = XattrPrefix(rawValue: header.nameIndex) {
            prefix = known.prefix
        } else if header.nameIndex == 5 {
            prefix = Array("lustre.".utf8)   // EROFS_XATTR_INDEX_LUSTRE
        } else {
            throw EROFSError.unsupported(what: "\(what): xattr name index \(header.nameIndex)")
        }
        let nameStart = offset + XattrEntryHeader.size
        let valueStart = nameStart + Int(header.nameLength)
        let name = prefix + bytes[nameStart..<valueStart]
        let value = Array(bytes[valueStart..<valueStart + Int(header.valueSize)])
        return (ExtendedAttribute(name: name, value: value), header.entrySize)
    }
}
