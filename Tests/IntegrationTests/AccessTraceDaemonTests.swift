import FerrySystem
import Foundation
import Testing

/// ferryd's access trace on this host's kernel (fanotify): `ferry trace` lists the chunks a
/// reader touched first, in order, resolved to the files that hold them, and nothing else.
@Suite(.serialized) struct AccessTraceDaemonTests {
    struct Trace: Decodable {
        struct Entry: Decodable { var blob: String; var chunk: Int; var offset_ms: Double; var paths: [String] }
        struct File: Decodable { var path: String; var offset_ms: Double; var chunks_read: Int; var chunks: Int }
        var image: String
        var id: String
        var mount_time: String
        var entries: [Entry]
        var overflow: Int
        var files: [File]
    }

    @Test func traceListsTheChunksOfTheFilesReadInFirstAccessOrder() throws {
        guard integrationPrerequisitesMet(tools: FanotifyDaemonTests.tools) else { return }
        let ws = try Workspace("fan-trace")
        let (image, reference, _, registry) = try FanotifyDaemonTests.converted(ws, chunkSize: "16KiB")
        // No readahead, ferryd's or the kernel's: the trace then holds exactly what was read.
        let config = ws.sub("ferryd.json")
        try Data(#"{"readahead_bytes": 0}"#.utf8).write(to: URL(fileURLWithPath: config))
        let daemon = try DaemonProcess(workspace: ws, extraArguments: ["--plain-http", registry.host, "--config", config])
        let mnt = try FanotifyDaemonTests.mountpoint(ws)
        try daemon.ferry(["mount", reference, mnt, "--kernel-readahead-kb", "0"])
        defer { _ = try? daemon.ferry(["umount", mnt]) }
        func trace(_ target: String = mnt) throws -> Trace {
            try JSONDecoder().decode(Trace.self, from: Data(try daemon.ferry(["trace", target, "--json"]).utf8))
        }
        #expect(try trace().entries.isEmpty, "mounting reads no blob chunk")

        // usr/lib/odd-size: 1,500,001 bytes = 92 chunks of 16 KiB. usr/lib/odd-copy has the same
        // bytes, so the same (deduplicated) chunks name it too; no other file shares them.
        let first = "/usr/lib/odd-size", twin = "/usr/lib/odd-copy"
        let data = try Data(contentsOf: URL(fileURLWithPath: mnt + first))
        #expect(data == (try Data(contentsOf: URL(fileURLWithPath: image.reference + first))))
        let chunks = (data.count + 16383) / 16384
        let afterFirst = try trace()
        #expect(afterFirst.image == reference)
        #expect(afterFirst.entries.count == chunks, "\(afterFirst.entries.count) chunks traced, the file has \(chunks)")
        #expect(Set(afterFirst.entries.map(\.chunk)).count == chunks, "each chunk once")
        let strangers = afterFirst.entries.filter { !$0.paths.contains(first) || !Set($0.paths).isSubset(of: [first, twin]) }
        #expect(strangers.isEmpty, "chunks of other files: \(strangers.prefix(5))")
        let offsets = afterFirst.entries.map(\.offset_ms)
        #expect(offsets == offsets.sorted(), "offsets never decrease")
        // The twins are read at the same moment; no other file is listed.
        #expect(Set(afterFirst.files.map(\.path)) == [first, twin], "\(afterFirst.files)")
        let firstFile = afterFirst.files.first { $0.path == first }
        #expect(firstFile.map { $0.chunks_read == chunks && $0.chunks == chunks && $0.offset_ms == offsets.first } == true,
                "\(afterFirst.files)")

        // Reading it again adds nothing; a second file comes after the first.
        _ = try Data(contentsOf: URL(fileURLWithPath: mnt + first))
        #expect(try trace().entries.count == chunks)
        let second = "/bin/tool"
        let tool = try Data(contentsOf: URL(fileURLWithPath: mnt + second))
        #expect(tool == (try Data(contentsOf: URL(fileURLWithPath: image.reference + second))))
        let afterSecond = try trace()
        let toolChunks = (tool.count + 16383) / 16384
        #expect(afterSecond.entries.count == chunks + toolChunks)
        #expect(afterSecond.entries.prefix(chunks).map(\.chunk) == afterFirst.entries.map(\.chunk), "the first reads keep their place")
        #expect(afterSecond.entries.dropFirst(chunks).allSatisfy { $0.paths.contains(second) }, "\(afterSecond.entries.dropFirst(chunks))")
        let secondOffsets = afterSecond.entries.map(\.offset_ms)
        #expect(secondOffsets == secondOffsets.sorted())
        let order = afterSecond.files.map(\.path)
        let firstIndex = order.firstIndex(of: first), secondIndex = order.firstIndex(of: second)
        #expect(firstIndex != nil && secondIndex != nil && firstIndex! < secondIndex!, "files in first-access order: \(order)")

        // The same trace by image id prefix, written to a file; and the human listing.
        let saved = ws.sub("trace.json")
        try daemon.ferry(["trace", String(afterSecond.id.prefix(12)), "--output", saved])
        let fromFile = try JSONDecoder().decode(Trace.self, from: Data(contentsOf: URL(fileURLWithPath: saved)))
        #expect(fromFile.entries.map(\.chunk) == afterSecond.entries.map(\.chunk))
        let listing = try daemon.ferry(["trace", mnt])
        #expect(listing.contains("\(chunks)/\(chunks) chunk(s)  \(first)"), "\(listing)")
        #expect(listing.contains(second), "\(listing)")
        let unknown = try Shell.run([Build.ferry, "trace", "0000ffff", "--socket", daemon.socket])
        #expect(unknown.status != 0 && unknown.stderr.contains("no registered image"), "\(unknown.stderr)")
    }
}
