/// The bytes of an EROFS image laid out by `ImageWriter`, in three parts:
///
/// ```
/// block 0                      head (superblock at byte 1024, device table after it)
/// blocks 1 ..< 1 + dataBlocks  written by the caller: FileData.contiguous contents
/// metadataOffset ...           metadata: inodes, xattrs, inline data, directory blocks
/// ```
public struct EncodedImage: Sendable {
    /// Block 0: 4096 bytes with the checksummed superblock at byte 1024.
    public var head: [UInt8]
    /// The metadata area, a whole number of blocks, to be written at `metadataOffset`.
    public var metadata: [UInt8]
    /// `(1 + tree.dataBlocks) * 4096`.
    public var metadataOffset: UInt64
    /// Blocks of the whole image (head, data and metadata): its size is `totalBlocks * 4096`.
    public var totalBlocks: UInt32
    /// The nid of each node, indexed like `ImageTree.nodes` (the kernel's inode number).
    public var nids: [UInt64]
    /// The superblock as written (after uuid derivation and checksum).
    public var superBlock: SuperBlock
}

/// Lays out an `ImageTree` as an uncompressed EROFS image with 4 KiB blocks.
///
/// Output depends only on the tree: the same tree gives the same bytes. See
/// Kernel-Notes/erofs-layout.md for every on-disk choice and the kernel version it needs.
public enum ImageWriter {
    /// Encodes `tree`. Throws `EROFSError.invalidTree`/`.unknownXattrPrefix`/`.tooLarge` for a
    /// tree that breaks the model's rules or the format's limits.
    public static func encode(_ tree: ImageTree) throws -> EncodedImage {
        var encoder = try Encoder(tree)
        return try encoder.run()
    }

    /// Encodes a tree without contiguous data (`dataBlocks == 0`, e.g. a Ferry bootstrap) as
    /// one contiguous byte array: head followed by metadata.
    public static func encodeBootstrap(_ tree: ImageTree) throws -> [UInt8] {
        guard tree.dataBlocks == 0 else {
            throw EROFSError.invalidTree(node: 0, reason: "encodeBootstrap needs dataBlocks == 0, "
                                             + "got \(tree.dataBlocks); use encode and write the data blocks")
        }
        let image = try encode(tree)
        return image.head + image.metadata
    }
}

/// One encoding run; phases: check tree → plan nodes → place inodes → write → head.
private struct Encoder {
    let tree: ImageTree
    let blockSize = Layout.blockSize
    var shape: WriterTree
    var plans: [NodePlan]
    var directoryLayouts: [Int: DirectoryLayout] = [:]
    var buildTime: (seconds: Int64, nanoseconds: UInt32) = (0, 0)
    var metaBlock: UInt32 { 1 + tree.dataBlocks }
    /// Devices beyond what fits in block 0 after the superblock go to the metadata start.
    var deviceTableInHead: Bool { tree.devices.count <= (blockSize - Layout.superBlockOffset - SuperBlock.size) / DeviceTableSlot.size }
    var usesChunks = false
    /// Filled after placement: each node's nid and dirent file type.
    var nidTable: [UInt64] = []
    var typeTable: [UInt8] = []

    init(_ tree: ImageTree) throws {
        self.tree = tree
        shape = try WriterTree(tree)
        plans = [NodePlan](repeating: NodePlan(), count: tree.nodes.count)
    }

    mutating func run() throws -> EncodedImage {
        try checkImageParameters()
        buildTime = dominantTimestamp(tree.nodes)
        for index in shape.order { try plan(index) }
        let (inodeBytes, ownedBlocks) = try place()
        let inodeBlocks = max(1, (inodeBytes + blockSize - 1) / blockSize)
        let metadataBlocks = UInt64(inodeBlocks) + UInt64(ownedBlocks)
        let totalBlocks = 1 + UInt64(tree.dataBlocks) + metadataBlocks
        guard totalBlocks <= UInt64(UInt32.max) else {
            throw EROFSError.tooLarge(what: "image size in blocks (\(totalBlocks))", limit: UInt64(UInt32.max))
        }
        nidTable = plans.map(\.nid)
        typeTable = tree.nodes.map { FileType($0.content).rawValue }
        var metadata = [UInt8](repeating: 0, count: Int(metadataBlocks) * blockSize)
        for index in shape.order { writeNode(index, into: &metadata) }
        var head = [UInt8](repeating: 0, count: blockSize)
        let superBlock = writeHead(into: &head, metadata: &metadata, totalBlocks: UInt32(totalBlocks))
        return EncodedImage(head: head, metadata: metadata,
                            metadataOffset: UInt64(metaBlock) * UInt64(blockSize),
                            totalBlocks: UInt32(totalBlocks), nids: nidTable, superBlock: superBlock)
    }

    // MARK: Checks

    func checkImageParameters() throws {
        guard tree.uuid.count == 16 else {
            throw EROFSError.invalidTree(node: 0, reason: "uuid must be 16 bytes, got \(tree.uuid.count)")
        }
        // Linux 6.1 strscpy()s the 16-byte field and refuses a name without a NUL in it.
        guard tree.volumeName.count <= 15, !tree.volumeName.contains(0) else {
            throw EROFSError.invalidTree(node: 0, reason: "volume name must be at most 15 bytes without NUL")
        }
        guard tree.devices.count <= Int(UInt16.max) else {
            throw EROFSError.tooLarge(what: "number of devices (\(tree.devices.count))", limit: UInt64(UInt16.max))
        }
        for (index, device) in tree.devices.enumerated() {
            guard (1...DeviceTableSlot.tagSize).contains(device.tag.count), !device.tag.contains(0) else {
                throw EROFSError.invalidTree(node: 0, reason: "device \(index + 1): tag must be 1...64 bytes without NUL")
            }
        }
        if !deviceTableInHead {
            let end = UInt64(metaBlock) * UInt64(blockSize) + UInt64(tree.devices.count * DeviceTableSlot.size)
            guard end / UInt64(DeviceTableSlot.size) <= UInt64(UInt16.max) else {
                throw EROFSError.tooLarge(what: "device table offset with \(tree.devices.count) devices after "
                                              + "\(tree.dataBlocks) data blocks", limit: UInt64(UInt16.max) * 128)
            }
        }
    }

    // MARK: Planning

    mutating func plan(_ index: Int) throws {
        let node = tree.nodes[index]
        var plan = NodePlan()
        guard node.permissions & ~0o7777 == 0 else {
            throw EROFSError.invalidTree(node: index, reason: "permissions 0o\(String(node.permissions, radix: 8)) "
                                             + "have bits outside 0o7777")
        }
        guard node.mtimeNanoseconds < 1_000_000_000 else {
            throw EROFSError.invalidTree(node: index, reason: "mtime nanoseconds \(node.mtimeNanoseconds) ≥ 1e9")
        }
        plan.xattrBody = try encodeXattrBody(node.xattrs, node: index)
        let size: UInt64
        switch node.content {
        case .directory:
            let layout = DirectoryLayout(shape.entries[index])
            directoryLayouts[index] = layout
            size = layout.size
        case let .regular(fileSize, data):
            size = fileSize
            try checkFileData(data, size: fileSize, node: index)
        case let .symlink(target):
            guard (1...4095).contains(target.count), !target.contains(0) else {
                throw EROFSError.invalidTree(node: index, reason: "symlink target must be 1...4095 bytes without NUL")
            }
            size = UInt64(target.count)
        default:
            size = 0
        }
        plan.extended = node.uid > 0xFFFF || node.gid > 0xFFFF || size > UInt64(UInt32.max)
            || shape.linkCount[index] > 0xFFFF
            || node.mtimeSeconds != buildTime.seconds || node.mtimeNanoseconds != buildTime.nanoseconds
        switch node.content {
        case .directory, .symlink, .regular(_, .inline):
            plan.planFlatData(size: size)
        case let .regular(_, .chunked(_, chunks)) where size > 0:
            plan.size = size
            plan.layout = .chunkBased
            plan.chunkCount = chunks.count
            usesChunks = true
        default:
            plan.size = size   // contiguous, empty files and special files: FLAT_PLAIN, no owned blocks
        }
        plans[index] = plan
    }

    func checkFileData(_ data: FileData, size: UInt64, node: Int) throws {
        let blockSize = UInt64(Layout.blockSize)
        switch data {
        case let .inline(bytes):
            guard UInt64(bytes.count) == size else {
                throw EROFSError.invalidTree(node: node, reason: "inline data has \(bytes.count) bytes, size says \(size)")
            }
        case let .contiguous(block):
            let blocks = (size + blockSize - 1) / blockSize
            guard size == 0 || (block >= 1 && UInt64(block) + blocks <= 1 + UInt64(tree.dataBlocks)) else {
                throw EROFSError.invalidTree(node: node, reason: "contiguous data at block \(block) (\(blocks) blocks) "
                                                 + "lies outside the data blocks 1..<\(1 + UInt64(tree.dataBlocks))")
            }
        case let .chunked(log2, chunks):
            guard log2 >= Layout.blockSizeBits, log2 <= Layout.blockSizeBits + 31 else {
                throw EROFSError.invalidTree(node: node, reason: "chunk size 2^\(log2) outside 2^12...2^43")
            }
            let chunkSize = UInt64(1) << UInt64(log2)
            let expected = size / chunkSize + (size % chunkSize == 0 ? 0 : 1)
            guard UInt64(chunks.count) == expected else {
                throw EROFSError.invalidTree(node: node, reason: "\(chunks.count) chunks for \(size) bytes in "
                                                 + "\(chunkSize)-byte chunks, expected \(expected)")
            }
            for (number, chunk) in chunks.enumerated() {
                guard case let .stored(device, block) = chunk else { continue }
                let valid: Bool
                if device == 0 {
                    valid = block >= 1 && UInt64(block) < 1 + UInt64(tree.dataBlocks)
                } else if Int(device) <= tree.devices.count {
                    valid = block < tree.devices[Int(device) - 1].blocks
                } else {
                    valid = false
                }
                guard valid, block != Layout.nullAddress else {
                    throw EROFSError.invalidTree(node: node, reason: "chunk \(number) refers to block \(block) of "
                                                     + "device \(device), which does not exist")
                }
            }
        }
    }

    // MARK: Placement

    /// Assigns nids in `order` and owned data blocks after the inode region. Returns the
    /// inode region's size in bytes and the number of owned blocks.
    mutating func place() throws -> (Int, Int) {
        var cursor = deviceTableInHead ? 0 : tree.devices.count * DeviceTableSlot.size
        for index in shape.order {
            cursor = roundUp(cursor, Layout.inodeSlotSize)
            let head = plans[index].headSize
            // Inode + xattrs + inline tail stay in one block (data.c refuses inline data that
            // crosses a block); longer heads start on a block boundary.
            if head > blockSize || cursor % blockSize + head > blockSize {
                cursor = roundUp(cursor, blockSize)
            }
            plans[index].nid = UInt64(cursor / Layout.inodeSlotSize)
            cursor += head
            if plans[index].layout == .chunkBased {
                cursor = roundUp(cursor, ChunkIndex.size) + plans[index].chunkCount * ChunkIndex.size
            }
        }
        guard plans[0].nid <= UInt64(UInt16.max) else {
            throw EROFSError.tooLarge(what: "root nid \(plans[0].nid)", limit: UInt64(UInt16.max))
        }
        let inodeBlocks = max(1, (cursor + blockSize - 1) / blockSize)
        var next = UInt64(metaBlock) + UInt64(inodeBlocks)
        var owned = 0
        for index in shape.order where plans[index].ownedBlocks > 0 {
            guard next + UInt64(plans[index].ownedBlocks) <= UInt64(UInt32.max) else {
                throw EROFSError.tooLarge(what: "metadata block address", limit: UInt64(UInt32.max))
            }
            plans[index].firstOwnedBlock = UInt32(next)
            next += UInt64(plans[index].ownedBlocks)
            owned += plans[index].ownedBlocks
        }
        return (cursor, owned)
    }

    // MARK: Writing

    func writeNode(_ index: Int, into metadata: inout [UInt8]) {
        let node = tree.nodes[index]
        let plan = plans[index]
        let type = FileType(node.content)
        let offset = Int(plan.nid) * Layout.inodeSlotSize
        let xattrCount: UInt16 = plan.xattrBody.isEmpty ? 0 : UInt16((plan.xattrBody.count - XattrBodyHeader.size) / 4 + 1)
        let format = UInt16(plan.layout.rawValue) << 1 | (plan.extended ? 1 : 0)
        var union: UInt32 = 0
        switch node.content {
        case let .characterDevice(rdev), let .blockDevice(rdev):
            union = rdev
        case let .regular(_, .contiguous(block)) where plan.size > 0:
            union = block
        case let .regular(_, .chunked(log2, _)) where plan.layout == .chunkBased:
            union = UInt32((UInt16(log2) - UInt16(Layout.blockSizeBits)) | Layout.chunkFormatIndexes)
        default:
            if plan.ownedBlocks > 0 {
                union = plan.firstOwnedBlock
            } else if plan.layout == .flatInline {
                union = Layout.nullAddress
            }
        }
        let mode = type.modeBits | node.permissions
        let inodeNumber = UInt32(truncatingIfNeeded: plan.nid)
        if plan.extended {
            var inode = ExtendedInode()
            inode.format = format
            inode.xattrCount = xattrCount
            inode.mode = mode
            inode.fileSize = plan.size
            inode.union = union
            inode.inodeNumber = inodeNumber
            inode.uid = node.uid
            inode.gid = node.gid
            inode.mtime = UInt64(bitPattern: node.mtimeSeconds)
            inode.mtimeNanoseconds = node.mtimeNanoseconds
            inode.nlink = shape.linkCount[index]
            inode.encode(into: &metadata, at: offset)
        } else {
            var inode = CompactInode()
            inode.format = format
            inode.xattrCount = xattrCount
            inode.mode = mode
            inode.nlink = UInt16(shape.linkCount[index])
            inode.fileSize = UInt32(plan.size)
            inode.union = union
            inode.inodeNumber = inodeNumber
            inode.uid = UInt16(node.uid)
            inode.gid = UInt16(node.gid)
            inode.encode(into: &metadata, at: offset)
        }
        let xattrOffset = offset + plan.inodeSize
        if !plan.xattrBody.isEmpty { metadata.storeBytes(plan.xattrBody, at: xattrOffset) }
        let tailOffset = xattrOffset + plan.xattrBody.count
        let ownedOffset = (Int(plan.firstOwnedBlock) - Int(metaBlock)) * blockSize

        switch node.content {
        case .directory:
            guard let layout = directoryLayouts[index] else { return }
            let blockCount = layout.blockStarts.count
            for block in 0..<blockCount {
                let at = block == blockCount - 1 && plan.layout == .flatInline ? tailOffset : ownedOffset + block * blockSize
                layout.writeBlock(block, entries: shape.entries[index], nids: nidTable,
                                  types: typeTable, into: &metadata, at: at)
            }
        case let .regular(_, .inline(bytes)):
            writeFlat(bytes, plan: plan, tailOffset: tailOffset, ownedOffset: ownedOffset, into: &metadata)
        case let .symlink(target):
            writeFlat(target, plan: plan, tailOffset: tailOffset, ownedOffset: ownedOffset, into: &metadata)
        case let .regular(_, .chunked(_, chunks)) where plan.layout == .chunkBased:
            var at = roundUp(tailOffset, ChunkIndex.size)
            for chunk in chunks {
                switch chunk {
                case let .stored(device, block):
                    ChunkIndex(deviceID: device, blockAddress: block).encode(into: &metadata, at: at)
                case .hole:
                    ChunkIndex(deviceID: 0, blockAddress: Layout.nullAddress).encode(into: &metadata, at: at)
                }
                at += ChunkIndex.size
            }
        default:
            break
        }
    }

    func writeFlat(_ bytes: [UInt8], plan: NodePlan, tailOffset: Int, ownedOffset: Int, into metadata: inout [UInt8]) {
        guard !bytes.isEmpty else { return }
        let inBlocks = plan.layout == .flatInline ? bytes.count - plan.inlineTail : bytes.count
        if inBlocks > 0 {
            metadata.replaceSubrange(ownedOffset..<ownedOffset + inBlocks, with: bytes[0..<inBlocks])
        }
        if plan.layout == .flatInline {
            metadata.replaceSubrange(tailOffset..<tailOffset + plan.inlineTail, with: bytes[inBlocks...])
        }
    }
}

extension Encoder {
    /// Fills block 0: superblock and (when it fits there) the device table; the checksum is
    /// computed last because it covers the rest of block 0 (`erofs_superblock_csum_verify`).
    func writeHead(into head: inout [UInt8], metadata: inout [UInt8], totalBlocks: UInt32) -> SuperBlock {
        var sb = SuperBlock()
        sb.featureCompat = Layout.featureCompatSuperBlockChecksum | Layout.featureCompatMTime
        sb.rootNid = UInt16(plans[0].nid)
        sb.inodeCount = UInt64(tree.nodes.count)
        sb.buildTime = UInt64(bitPattern: buildTime.seconds)
        sb.buildTimeNanoseconds = buildTime.nanoseconds
        sb.blocks = totalBlocks
        sb.metaBlockAddress = metaBlock
        sb.volumeName = fixed(tree.volumeName, 16)
        if usesChunks { sb.featureIncompat |= Layout.featureIncompatChunkedFile }
        if !tree.devices.isEmpty {
            sb.featureIncompat |= Layout.featureIncompatDeviceTable
            sb.extraDevices = UInt16(tree.devices.count)
            let tableStart = deviceTableInHead ? Layout.superBlockOffset + SuperBlock.size : Int(metaBlock) * blockSize
            sb.deviceSlotOffset = UInt16(tableStart / DeviceTableSlot.size)
            for (index, device) in tree.devices.enumerated() {
                let slot = DeviceTableSlot(tag: device.tag, blocks: device.blocks)
                if deviceTableInHead {
                    slot.encode(into: &head, at: tableStart + index * DeviceTableSlot.size)
                } else {
                    slot.encode(into: &metadata, at: index * DeviceTableSlot.size)
                }
            }
        }
        sb.uuid = tree.uuid.allSatisfy({ $0 == 0 }) ? derivedUUID(metadata: metadata, superBlock: sb) : tree.uuid
        sb.encode(into: &head, at: Layout.superBlockOffset)
        sb.checksum = CRC32C.superBlockChecksum(block: head, blockSize: blockSize)
        sb.encode(into: &head, at: Layout.superBlockOffset)
        return sb
    }

    /// A uuid that depends only on the content: two 64-bit FNV-1a hashes (different offset
    /// bases) over the superblock and the metadata, shaped as an RFC 4122 version-4 uuid.
    func derivedUUID(metadata: [UInt8], superBlock: SuperBlock) -> [UInt8] {
        var first: UInt64 = 0xCBF2_9CE4_8422_2325
        var second: UInt64 = 0x6C62_272E_07BB_0142
        let prime: UInt64 = 0x0000_0100_0000_01B3
        for byte in superBlock.encoded() + tree.devices.flatMap(\.tag) {
            first = (first ^ UInt64(byte)) &* prime
            second = (second ^ UInt64(byte)) &* prime
        }
        for byte in metadata {
            first = (first ^ UInt64(byte)) &* prime
            second = (second &+ UInt64(byte)) &* prime
        }
        var uuid = [UInt8](repeating: 0, count: 16)
        uuid.storeLE64(first, at: 0)
        uuid.storeLE64(second, at: 8)
        uuid[6] = uuid[6] & 0x0F | 0x40
        uuid[8] = uuid[8] & 0x3F | 0x80
        return uuid
    }
}
