/// Reads `count` bytes at `offset` of extra device `device` (1...N): the caller's access to
/// Ferry's blobs or device files.
public typealias DeviceReader = (_ device: UInt16, _ offset: UInt64, _ count: Int) throws -> [UInt8]

extension ImageReader {
    /// Where one run of a file's bytes lives.
    private enum Piece {
        case image(offset: UInt64, length: Int)
        case device(UInt16, offset: UInt64, length: Int)
        case zeros(length: Int)
    }

    /// Bytes `offset ..< offset + count` of a regular file, directory or symlink (clamped to
    /// its size). Device-0 data comes from the image; other devices through `device`.
    public func read(_ inode: Inode, offset: UInt64, count: Int, device: DeviceReader) throws -> [UInt8] {
        guard offset < inode.size, count > 0 else { return [] }
        let end = offset + min(UInt64(count), inode.size - offset)
        var result = [UInt8]()
        result.reserveCapacity(Int(end - offset))
        var position = offset
        while position < end {
            let piece = try locate(inode, at: position, limit: end - position)
            switch piece {
            case let .image(at, length):
                result += try source.read(at: at, count: length, what: "data of nid \(inode.nid)")
                position += UInt64(length)
            case let .device(id, at, length):
                let bytes = try device(id, at, length)
                guard bytes.count == length else {
                    throw EROFSError.truncated(what: "device \(id) data of nid \(inode.nid)", offset: at,
                                               needed: UInt64(length), available: UInt64(bytes.count))
                }
                result += bytes
                position += UInt64(length)
            case let .zeros(length):
                result += repeatElement(0, count: length)
                position += UInt64(length)
            }
        }
        return result
    }

    /// The whole content of a file (or directory, or symlink).
    public func contents(of inode: Inode, device: DeviceReader) throws -> [UInt8] {
        guard inode.size <= UInt64(Int.max) else { throw EROFSError.tooLarge(what: "file size", limit: UInt64(Int.max)) }
        return try read(inode, offset: 0, count: Int(inode.size), device: device)
    }

    /// The target of a symlink.
    public func symlinkTarget(_ inode: Inode) throws -> [UInt8] {
        guard inode.type == .symlink else {
            throw EROFSError.corrupt(what: "nid \(inode.nid)", reason: "not a symlink")
        }
        guard inode.size <= 4096 else {
            throw EROFSError.corrupt(what: "symlink nid \(inode.nid)", reason: "target of \(inode.size) bytes")
        }
        return try contents(of: inode) { id, _, _ in
            throw EROFSError.unsupported(what: "symlink nid \(inode.nid) stored on device \(id)")
        }
    }

    /// The chunk table of a chunk-based inode (device ids masked as the kernel masks them).
    public func chunks(of inode: Inode) throws -> [ChunkReference] {
        guard case let .chunked(_, indexed, tableOffset, count) = inode.layout else { return [] }
        let unit = indexed ? ChunkIndex.size : 4
        let table = try source.read(at: tableOffset, count: count * unit, what: "chunk table of nid \(inode.nid)")
        return try (0..<count).map { number in
            let (device, block) = try chunkEntry(table, number: number, indexed: indexed, nid: inode.nid)
            return block == Layout.nullAddress ? .hole : .stored(device: device, block: block)
        }
    }

    private func chunkEntry(_ bytes: [UInt8], number: Int, indexed: Bool, nid: UInt64) throws -> (UInt16, UInt32) {
        if !indexed { return (0, bytes.loadLE32(at: number * 4)) }
        let index = try ChunkIndex.decode(bytes, at: number * ChunkIndex.size)
        let device = index.deviceID & deviceIDMask
        guard Int(device) <= deviceSlots.count else {
            throw EROFSError.corrupt(what: "chunk \(number) of nid \(nid)",
                                     reason: "device id \(device) but the image has \(deviceSlots.count) extra devices")
        }
        return (device, index.blockAddress)
    }

    private func locate(_ inode: Inode, at position: UInt64, limit: UInt64) throws -> Piece {
        let blockSize = UInt64(self.blockSize)
        let what = "data of nid \(inode.nid)"
        switch inode.layout {
        case .none:
            throw EROFSError.corrupt(what: what, reason: "a \(inode.type) has no data")
        case .compressed(let kind):
            throw EROFSError.unsupported(what: "compressed data (layout \(kind)) of nid \(inode.nid)")
        case let .flatPlain(start):
            return try blockPiece(start: start, position: position, length: limit, what: what)
        case let .flatInline(start, tailOffset):
            let blocks = (inode.size + blockSize - 1) / blockSize
            let tailStart = (blocks - 1) * blockSize
            if position < tailStart {
                return try blockPiece(start: start, position: position, length: min(limit, tailStart - position), what: what)
            }
            let tailSize = inode.size - tailStart
            guard tailOffset % blockSize + tailSize <= blockSize else {
                throw EROFSError.corrupt(what: what, reason: "inline tail of \(tailSize) bytes crosses a block boundary")
            }
            return .image(offset: tailOffset + (position - tailStart), length: Int(min(limit, inode.size - position)))
        case let .chunked(log2, indexed, tableOffset, _):
            let number = position >> UInt64(log2)
            let unit = indexed ? ChunkIndex.size : 4
            let entry = try source.read(at: tableOffset + number * UInt64(unit), count: unit, what: "chunk index of nid \(inode.nid)")
            let (device, block) = try chunkEntry(entry, number: 0, indexed: indexed, nid: inode.nid)
            let chunkEnd = min((number + 1) << UInt64(log2), inode.size)
            let length = min(limit, chunkEnd - position)
            if block == Layout.nullAddress { return .zeros(length: Int(length)) }
            let within = position - (number << UInt64(log2))
            if device == 0 {
                return try blockPiece(start: block, position: within, length: length, what: what)
            }
            return .device(device, offset: UInt64(block) * blockSize + within, length: Int(length))
        }
    }

    /// Bytes at `position` of a run starting at device-0 block `start`, following unified
    /// addressing (`mapped_blkaddr`) into extra devices as `erofs_map_dev` does.
    private func blockPiece(start: UInt32, position: UInt64, length: UInt64, what: String) throws -> Piece {
        let blockSize = UInt64(self.blockSize)
        let address = UInt64(start) * blockSize + position
        for (index, slot) in deviceSlots.enumerated() where slot.mappedBlockAddress != 0 {
            let begin = UInt64(slot.mappedBlockAddress) * blockSize
            if address >= begin, address < begin + UInt64(slot.blocks) * blockSize {
                return .device(UInt16(index + 1), offset: address - begin, length: Int(length))
            }
        }
        guard address < source.size, source.size - address >= length else {
            throw EROFSError.truncated(what: what, offset: address, needed: length,
                                       available: address < source.size ? source.size - address : 0)
        }
        return .image(offset: address, length: Int(length))
    }
}
