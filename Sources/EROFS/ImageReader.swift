/// Reads an EROFS image: superblock, device table, inodes, directories, file data.
///
/// Every structure is validated before use; a corrupt image yields `EROFSError`, never a
/// crash. Images are read on demand (a file is not loaded whole). Handles uncompressed
/// layouts (flat plain, flat inline, chunk-based with indexes or block maps) at block sizes
/// 512...4096; compressed inodes are listed but their data cannot be read.
public final class ImageReader: Sendable {
    /// The decoded superblock (checksum verified when the image declares one).
    public let superBlock: SuperBlock
    /// The device table: slot `i` is device id `i + 1`.
    public let deviceSlots: [DeviceTableSlot]
    let source: any ImageSource

    /// The image's block size in bytes.
    public var blockSize: Int { 1 << Int(superBlock.blockSizeBits) }
    /// The nid of the root directory.
    public var rootNid: UInt64 { UInt64(superBlock.rootNid) }
    /// The image's size in bytes.
    public var imageSize: UInt64 { source.size }
    /// The extra devices in the model's form (tags without padding).
    public var devices: [DeviceSlot] { deviceSlots.map { DeviceSlot(tag: $0.tag, blocks: $0.blocks) } }

    /// Reads an image held in memory.
    public convenience init(bytes: [UInt8]) throws {
        try self.init(source: MemorySource(bytes: bytes))
    }

    /// Reads an image file on demand.
    public convenience init(path: String) throws {
        try self.init(source: FileSource(path: path))
    }

    init(source: any ImageSource) throws {
        self.source = source
        let headLength = Int(min(source.size, 4096))
        guard headLength >= Layout.superBlockOffset + SuperBlock.size else {
            throw EROFSError.truncated(what: "superblock", offset: UInt64(Layout.superBlockOffset),
                                       needed: UInt64(SuperBlock.size),
                                       available: source.size > 1024 ? source.size - 1024 : 0)
        }
        let head = try source.read(at: 0, count: headLength, what: "block 0")
        let sb = try SuperBlock.decode(head, at: Layout.superBlockOffset)
        guard sb.magic == Layout.magic else { throw EROFSError.badMagic(found: sb.magic) }
        guard (9...12).contains(sb.blockSizeBits) else {
            throw EROFSError.unsupported(what: "block size 2^\(sb.blockSizeBits) (this reader handles 2^9...2^12)")
        }
        guard sb.dirBlockBits == 0 else { throw EROFSError.unsupported(what: "dirblkbits \(sb.dirBlockBits)") }
        let unknown = sb.featureIncompat & ~Layout.readerIncompatFeatures
        guard unknown == 0 else {
            throw EROFSError.unsupported(what: "incompatible feature bits 0x\(String(unknown, radix: 16))")
        }
        if sb.featureCompat & Layout.featureCompatSuperBlockChecksum != 0 {
            let blockSize = 1 << Int(sb.blockSizeBits)
            let length = blockSize > Layout.superBlockOffset ? blockSize - Layout.superBlockOffset : blockSize
            guard head.count >= Layout.superBlockOffset + length else {
                throw EROFSError.truncated(what: "checksummed superblock area", offset: UInt64(Layout.superBlockOffset),
                                           needed: UInt64(length), available: UInt64(head.count - Layout.superBlockOffset))
            }
            let computed = CRC32C.superBlockChecksum(block: head, blockSize: blockSize)
            guard computed == sb.checksum else { throw EROFSError.badChecksum(stored: sb.checksum, computed: computed) }
        }
        guard UInt64(sb.metaBlockAddress) << UInt64(sb.blockSizeBits) < source.size else {
            throw EROFSError.corrupt(what: "superblock", reason: "meta_blkaddr \(sb.metaBlockAddress) lies beyond the image")
        }
        var slots = [DeviceTableSlot]()
        if sb.featureIncompat & Layout.featureIncompatDeviceTable != 0, sb.extraDevices > 0 {
            let start = UInt64(sb.deviceSlotOffset) * UInt64(DeviceTableSlot.size)
            let table = try source.read(at: start, count: Int(sb.extraDevices) * DeviceTableSlot.size, what: "device table")
            for index in 0..<Int(sb.extraDevices) {
                // An empty tag is legal (mkfs.erofs --blobdev writes one): the device must then be
                // named at mount time with -o device=.
                slots.append(try DeviceTableSlot.decode(table, at: index * DeviceTableSlot.size))
            }
        }
        superBlock = sb
        deviceSlots = slots
        let root = try inode(nid: UInt64(sb.rootNid))
        guard root.type == .directory else {
            throw EROFSError.corrupt(what: "superblock", reason: "root nid \(sb.rootNid) is a \(root.type), not a directory")
        }
    }

    /// The mask the kernel applies to chunk device ids: `roundup_pow_of_two(devices + 1) - 1`.
    var deviceIDMask: UInt16 {
        var power = 1
        while power < deviceSlots.count + 1 { power <<= 1 }
        return UInt16(truncatingIfNeeded: power - 1)
    }
}
