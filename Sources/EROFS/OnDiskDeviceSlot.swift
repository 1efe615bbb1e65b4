/// `struct erofs_deviceslot`, 128 bytes: one extra device of the device table, which starts
/// at byte `devt_slotoff * 128` of the image.
public struct DeviceTableSlot: OnDiskStruct {
    public static let size = 128
    public static let tagSize = 64

    /// Up to 64 bytes, NUL-padded on disk (decode drops the padding). Without `-o device=` the kernel opens the tag as a path
    /// (block-device mode) or uses it as the fscache cookie (fscache mode).
    public var tag: [UInt8] = []            // 0...63
    public var blocks: UInt32 = 0           // 64
    /// Unified addressing: device-0 block addresses at or above this map into this device
    /// (0 = not mapped). Ferry writes 0 and addresses chunks by device id.
    public var mappedBlockAddress: UInt32 = 0   // 68
    // 72...127 reserved (blocks_hi / uniaddr_hi in newer kernels, only under 48BIT)

    public init(tag: [UInt8] = [], blocks: UInt32 = 0, mappedBlockAddress: UInt32 = 0) {
        self.tag = tag
        self.blocks = blocks
        self.mappedBlockAddress = mappedBlockAddress
    }

    public func encode(into bytes: inout [UInt8], at offset: Int) {
        bytes.replaceSubrange(offset..<offset + Self.size, with: repeatElement(0, count: Self.size))
        bytes.storeBytes(fixed(tag, Self.tagSize), at: offset)
        bytes.storeLE32(blocks, at: offset + 64)
        bytes.storeLE32(mappedBlockAddress, at: offset + 68)
    }

    public static func decode(_ bytes: [UInt8], at offset: Int) throws -> DeviceTableSlot {
        try requireBytes(bytes, at: offset, count: size, for: "device slot")
        let tag = Array(bytes[offset..<offset + tagSize].prefix { $0 != 0 })
        return DeviceTableSlot(tag: tag, blocks: bytes.loadLE32(at: offset + 64),
                               mappedBlockAddress: bytes.loadLE32(at: offset + 68))
    }
}
