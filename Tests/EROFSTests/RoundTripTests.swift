import Foundation
import Testing
@testable import EROFS

/// Writer → reader: everything the model says comes back from the bytes.
@Suite struct RoundTripTests {
    static let fixtures: [String: @Sendable () -> RichFixture] = [
        "self-contained": RichFixture.selfContained, "with-devices": { RichFixture.withDevices() },
    ]

    @Test(arguments: ["self-contained", "with-devices"])
    func readerSeesEveryNodeTheWriterWrote(kind: String) throws {
        let make = try #require(Self.fixtures[kind])
        let fixture = make()
        let image = try ImageWriter.encode(fixture.tree)
        var imageBytes = image.head + fixture.data
        imageBytes += [UInt8](repeating: 0, count: Int(image.metadataOffset) - imageBytes.count) + image.metadata
        let reader = try ImageReader(bytes: imageBytes)
        #expect(reader.devices == fixture.tree.devices)
        #expect(reader.superBlock.inodeCount == UInt64(fixture.tree.nodes.count))
        #expect(reader.superBlock.blocks == image.totalBlocks)
        #expect(reader.rootNid == image.nids[0])

        var walked: [([UInt8], Inode)] = []
        try reader.walk { walked.append(($0, $1)) }
        let expected = fixture.paths()
        #expect(walked.map(\.0) == expected.map(\.path))
        let links = fixture.linkCounts()
        let readDevice: DeviceReader = { device, offset, count in
            Array(fixture.devices[Int(device) - 1][Int(offset)..<Int(offset) + count])
        }
        for ((path, inode), (_, index)) in zip(walked, expected) {
            let node = fixture.tree.nodes[index]
            let label = printable(path)
            #expect(inode.nid == image.nids[index], "\(label)")
            #expect(inode.type == FileType(node.content), "\(label)")
            #expect(inode.permissions == node.permissions, "\(label)")
            #expect(inode.uid == node.uid && inode.gid == node.gid, "\(label)")
            #expect(inode.mtimeSeconds == node.mtimeSeconds && inode.mtimeNanoseconds == node.mtimeNanoseconds, "\(label)")
            #expect(inode.nlink == links[index], "\(label)")
            #expect(inode.xattrs == node.xattrs, "\(label)")
            switch node.content {
            case let .regular(size, data):
                #expect(inode.size == size, "\(label)")
                if size < 1 << 20 {
                    #expect(try reader.contents(of: inode, device: readDevice)
                        == fixture.expectedBytes(node: index, offset: 0, count: Int(size)), "\(label)")
                } else {
                    for offset in [UInt64(0), 65530, 1 << 31, size - 70000, size - 1] {
                        #expect(try reader.read(inode, offset: offset, count: 70000, device: readDevice)
                            == fixture.expectedBytes(node: index, offset: offset, count: 70000), "\(label) @\(offset)")
                    }
                }
                if case let .chunked(log2, chunks) = data, size > 0 {
                    #expect(try reader.chunks(of: inode) == chunks, "\(label)")
                    if case let .chunked(readLog2, indexed, _, count) = inode.layout {
                        #expect(readLog2 == log2 && indexed && count == chunks.count, "\(label)")
                    } else {
                        Issue.record("\(label): expected a chunk-based layout, got \(inode.layout)")
                    }
                }
                if case let .contiguous(block) = data, size > 0 {
                    #expect(inode.layout == .flatPlain(startBlock: block), "\(label)")
                }
            case let .symlink(target):
                #expect(try reader.symlinkTarget(inode) == target, "\(label)")
            case let .characterDevice(rdev), let .blockDevice(rdev):
                #expect(inode.rdev == rdev, "\(label)")
            case let .directory(entries):
                let records = try reader.entries(of: inode)
                #expect(records.count == entries.count + 2, "\(label)")
                #expect(records.map(\.name) == records.map(\.name).sorted { $0.lexicographicallyPrecedes($1) })
                for record in records where !record.isDotOrDotDot {
                    let child = try #require(entries.first { $0.name == record.name })
                    #expect(record.nid == image.nids[child.node])
                    #expect(record.type == FileType(fixture.tree.nodes[child.node].content))
                }
            case .fifo, .socket:
                #expect(inode.size == 0)
            }
        }
        // Lookup by path, including names from the big directory and the deep path.
        #expect(try reader.lookup(path: "/dir/b").nid == reader.lookup(path: "/hardlink").nid)
        #expect(try reader.lookup(path: "/big/entry-2999").type == .symlink)
        #expect(try reader.lookup(path: [0x2F, 0x62, 0x69, 0x67, 0x2F, 0xFF, 0xC3, 0x28, 0x80] + bytes("1401")).type == .regular)
        let deep = (0..<40).map { "level-\($0)" }.joined(separator: "/")
        #expect(try reader.contents(of: reader.lookup(path: "/\(deep)/leaf"), device: readDevice) == bytes("deep"))
        #expect(throws: EROFSError.notFound(path: "/nope")) { try reader.lookup(path: "/nope") }
        #expect(throws: EROFSError.notADirectory(path: "/hello")) { try reader.lookup(path: "/hello/x") }
    }

    @Test func sameTreeGivesSameBytes() throws {
        let first = try ImageWriter.encode(RichFixture.withDevices().tree)
        let second = try ImageWriter.encode(RichFixture.withDevices().tree)
        #expect(first.head == second.head)
        #expect(first.metadata == second.metadata)
        #expect(first.superBlock.uuid != [UInt8](repeating: 0, count: 16))
    }

    @Test func compactInodesUseTheMostCommonTimestamp() throws {
        let fixture = RichFixture.selfContained()
        let image = try ImageWriter.encode(fixture.tree)
        #expect(image.superBlock.buildTime == 1_700_000_000)
        #expect(image.superBlock.buildTimeNanoseconds == 0)
        let reader = try ImageReader(bytes: image.head + fixture.data + image.metadata)
        #expect(try reader.lookup(path: "/hello").isExtended == false)
        #expect(try reader.lookup(path: "/time-later").isExtended == true)
        #expect(try reader.lookup(path: "/big-ids").isExtended == true)
        #expect(try reader.lookup(path: "/small-ids").isExtended == false)
        // Root first, so its nid fits the 16-bit root_nid.
        #expect(image.nids[0] == 0)
    }

    @Test func rejectsBadTrees() throws {
        var builder = TreeBuilder()
        let file = builder.add("f", builder.node(.regular(size: 1, data: .inline([1]))))
        var bad = builder.nodes
        bad[file].xattrs = [ExtendedAttribute(name: bytes("os2.name"), value: [])]
        #expect(throws: EROFSError.unknownXattrPrefix(node: file, name: bytes("os2.name"))) {
            try ImageWriter.encode(ImageTree(nodes: bad))
        }
        var duplicate = builder
        duplicate.link(bytes("f"), to: file, in: 0)
        #expect(throws: EROFSError.self) { try ImageWriter.encode(ImageTree(nodes: duplicate.nodes)) }
        var orphan = builder.nodes
        orphan.append(builder.node(.fifo))
        #expect(throws: EROFSError.invalidTree(node: 2, reason: "node is not reachable from the root directory")) {
            try ImageWriter.encode(ImageTree(nodes: orphan))
        }
        var wrongSize = builder.nodes
        wrongSize[file].content = .regular(size: 2, data: .inline([1]))
        #expect(throws: EROFSError.self) { try ImageWriter.encode(ImageTree(nodes: wrongSize)) }
        var badChunk = builder.nodes
        badChunk[file].content = .regular(size: 1, data: .chunked(chunkSizeLog2: 12, chunks: [.stored(device: 3, block: 0)]))
        #expect(throws: EROFSError.self) { try ImageWriter.encode(ImageTree(nodes: badChunk)) }
        var slash = builder
        slash.add("a/b", builder.node(.fifo))
        #expect(throws: EROFSError.self) { try ImageWriter.encode(ImageTree(nodes: slash.nodes)) }
    }
}
