import Foundation
import Testing
@testable import EROFS

/// Damaged images give `EROFSError`, never a crash.
@Suite struct CorruptImageTests {
    static func image() throws -> [UInt8] {
        var builder = TreeBuilder()
        builder.add("file", builder.node(.regular(size: 5000, data: .inline(pattern(5000, seed: 9)))))
        let dir = builder.add("dir", builder.node(.directory(entries: [])))
        for index in 0..<400 {
            var node = builder.node(index % 2 == 0 ? .fifo : .symlink(target: bytes("target-\(index)")))
            node.xattrs = index % 7 == 0 ? [ExtendedAttribute(name: bytes("user.i"), value: bytes("\(index)"))] : []
            builder.add("entry-\(index)", node, in: dir)
        }
        builder.add("chunks", builder.node(.regular(
            size: 3 * 4096, data: .chunked(chunkSizeLog2: 12, chunks: [.stored(device: 1, block: 0), .hole, .stored(device: 1, block: 2)]))))
        return try ImageWriter.encodeBootstrap(ImageTree(nodes: builder.nodes, devices: [DeviceSlot(tag: bytes("blob"), blocks: 3)]))
    }

    /// Reads everything the reader can reach; errors are fine, crashes are not.
    static func readEverything(_ bytes: [UInt8]) throws {
        let reader = try ImageReader(bytes: bytes)
        try reader.walk { _, inode in
            switch inode.type {
            case .regular:
                _ = try reader.contents(of: inode) { _, _, count in [UInt8](repeating: 0, count: count) }
                _ = try reader.chunks(of: inode)
            case .symlink:
                _ = try reader.symlinkTarget(inode)
            default:
                break
            }
        }
    }

    @Test func intactImageReads() throws {
        try Self.readEverything(try Self.image())
    }

    @Test func badMagic() throws {
        var bytes = try Self.image()
        bytes[1024] ^= 0xFF
        #expect(throws: EROFSError.badMagic(found: 0xE0F5_E11D)) { try ImageReader(bytes: bytes) }
    }

    @Test func badChecksum() throws {
        var bytes = try Self.image()
        bytes[1024 + 16] ^= 1   // inode count
        #expect {
            try ImageReader(bytes: bytes)
        } throws: { error in
            if case EROFSError.badChecksum = error { return true }
            return false
        }
        // The device table in block 0 is covered by the checksum too.
        var table = try Self.image()
        table[1152 + 1] ^= 1
        #expect(throws: EROFSError.self) { try ImageReader(bytes: table) }
    }

    @Test(arguments: [0, 1000, 1100, 2000, 4096, 4096 + 100, 8192])
    func truncatedImages(length: Int) throws {
        let bytes = Array(try Self.image().prefix(length))
        #expect(throws: EROFSError.self) { try Self.readEverything(bytes) }
    }

    /// Found by `Tools/fuzz erofs`: an extended inode with i_size near 2^64 trapped (arithmetic
    /// overflow) when its inline data was read.
    @Test(arguments: [UInt64.max, UInt64(Int64.max) + 1])
    func hugeInodeSizeIsCorrupt(size: UInt64) throws {
        var builder = TreeBuilder()
        var node = builder.node(.regular(size: 100, data: .inline(pattern(100, seed: 3))))
        node.uid = 100_000   // beyond 16 bits: an extended inode, whose i_size is 64 bits
        builder.add("file", node)
        var bytes = try ImageWriter.encodeBootstrap(ImageTree(nodes: builder.nodes, devices: []))
        let file = try ImageReader(bytes: bytes).lookup(path: "/file")
        #expect(file.isExtended)
        let sizeOffset = Int(file.offset) + 8   // erofs_inode_extended.i_size
        for i in 0..<8 { bytes[sizeOffset + i] = UInt8(truncatingIfNeeded: size >> (8 * UInt64(i))) }
        bytes[1024 + 8] &= ~1   // drop EROFS_FEATURE_COMPAT_SB_CHKSUM rather than recompute it
        let reader = try ImageReader(bytes: bytes)
        #expect {
            try reader.lookup(path: "/file")
        } throws: { error in
            if case let EROFSError.corrupt(_, reason) = error { return reason.contains("i_size") }
            return false
        }
    }

    @Test func nidOutOfRange() throws {
        let reader = try ImageReader(bytes: try Self.image())
        for nid in [UInt64(1) << 20, 1 << 40, UInt64.max] {
            #expect(throws: EROFSError.self) { try reader.inode(nid: nid) }
        }
    }

    /// Random byte damage in the metadata (checksum still valid): 400 deterministic variants.
    @Test func randomDamageNeverCrashes() throws {
        let original = try Self.image()
        var state: UInt64 = 0x1234_5678
        func next() -> Int {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Int(state % UInt64(Int.max))
        }
        var failures = 0
        for _ in 0..<400 {
            var bytes = original
            for _ in 0..<(1 + next() % 8) {
                let offset = 4096 + next() % (bytes.count - 4096)
                bytes[offset] = UInt8(truncatingIfNeeded: next())
            }
            do {
                try Self.readEverything(bytes)
            } catch is EROFSError {
                failures += 1
            }
        }
        print("random damage: \(failures) of 400 variants rejected with EROFSError, the rest read")
    }
}
