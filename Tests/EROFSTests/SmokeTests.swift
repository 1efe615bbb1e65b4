import Foundation
import Testing
@testable import EROFS

@Test func smallTreeWritesAndFsckAccepts() throws {
    var builder = TreeBuilder()
    builder.add("hello", builder.node(.regular(size: 6, data: .inline(bytes("hello\n")))))
    let dir = builder.add("sub", builder.node(.directory(entries: []), 0o755))
    builder.add("link", builder.node(.symlink(target: bytes("../hello")), 0o777), in: dir)
    let image = try ImageWriter.encode(ImageTree(nodes: builder.nodes))
    let scratch = try Scratch("smoke")
    defer { scratch.cleanup() }
    try writeImage(image, to: scratch.path("img"))
    let fsck = try run("fsck.erofs", ["--extract=" + scratch.path("out"), scratch.path("img")])
    print(fsck.output)
    #expect(fsck.status == 0)
    let reader = try ImageReader(path: scratch.path("img"))
    var paths: [String] = []
    try reader.walk { path, _ in paths.append(String(decoding: path, as: UTF8.self)) }
    #expect(paths == ["/", "/hello", "/sub", "/sub/link"])
}
