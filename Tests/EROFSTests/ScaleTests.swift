import Foundation
import Testing
@testable import EROFS

/// Many nodes: the writer stays linear (sorted directories, preallocated buffer) and the
/// result is still a valid image. Set FERRY_EROFS_NODES to try other sizes.
@Suite struct ScaleTests {
    @Test func manyNodesEncodeAndReadBack() throws {
        let count = Int(ProcessInfo.processInfo.environment["FERRY_EROFS_NODES"] ?? "") ?? 100_000
        var nodes = [Node(content: .directory(entries: []), permissions: 0o755)]
        var rootEntries: [DirectoryEntry] = []
        let perDirectory = 1000
        var directory = -1
        var entries: [DirectoryEntry] = []
        func flush() {
            if directory >= 0 { nodes[directory].content = .directory(entries: entries) }
        }
        for index in 0..<count {
            if index % perDirectory == 0 {
                flush()
                nodes.append(Node(content: .directory(entries: []), permissions: 0o755))
                directory = nodes.count - 1
                rootEntries.append(DirectoryEntry(name: Array("d\(index / perDirectory)".utf8), node: directory))
                entries = []
            }
            nodes.append(Node(content: .regular(size: 3, data: .inline([1, 2, 3])), permissions: 0o644,
                              mtimeSeconds: Int64(index % 3)))
            entries.append(DirectoryEntry(name: Array("file-\(index)".utf8), node: nodes.count - 1))
        }
        flush()
        nodes[0].content = .directory(entries: rootEntries)
        let started = Date()
        let bytes = try ImageWriter.encodeBootstrap(ImageTree(nodes: nodes))
        print("encoded \(nodes.count) nodes into \(bytes.count) bytes in \(Date().timeIntervalSince(started)) s")
        let reader = try ImageReader(bytes: bytes)
        #expect(reader.superBlock.inodeCount == UInt64(nodes.count))
        let last = try reader.lookup(path: "/d\((count - 1) / perDirectory)/file-\(count - 1)")
        #expect(try reader.contents(of: last) { _, _, _ in [] } == [1, 2, 3])
    }
}
