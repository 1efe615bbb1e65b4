import Foundation
import EROFS

/// Runs a tool and returns its exit status and combined output.
@discardableResult
func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool.hasPrefix("/") ? tool : "/usr/bin/env")
    process.arguments = tool.hasPrefix("/") ? arguments : [tool] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// True when `tool` is on PATH.
func haveTool(_ tool: String) -> Bool {
    (try? run("sh", ["-c", "command -v \(tool)"]).status) == 0
}

/// A fresh temporary directory, removed by `cleanup()`.
struct Scratch {
    let url: URL
    init(_ label: String) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("erofs-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    func cleanup() {
        _ = try? run("sh", ["-c", "grep -q ' \(url.path)' /proc/mounts && umount -R \(url.path)/* 2>/dev/null; true"])
        try? FileManager.default.removeItem(at: url)
    }
}

/// Writes an encoded image to `path`, with `data` bytes placed at block 1.
func writeImage(_ image: EncodedImage, data: [UInt8] = [], to path: String) throws {
    var bytes = image.head
    bytes += data
    bytes += [UInt8](repeating: 0, count: Int(image.metadataOffset) - bytes.count)
    bytes += image.metadata
    precondition(bytes.count == Int(image.totalBlocks) * 4096)
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// Deterministic pseudo-random bytes.
func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<count).map { _ in
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return UInt8(truncatingIfNeeded: state)
    }
}

/// The kernel's `new_encode_dev`.
func encodeDevice(major: UInt32, minor: UInt32) -> UInt32 {
    (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Builds an `ImageTree` by path, for tests.
struct TreeBuilder {
    var nodes: [Node] = [Node(content: .directory(entries: []), permissions: 0o755, mtimeSeconds: 1_700_000_000)]
    var defaultTime: Int64 = 1_700_000_000

    /// Adds `node` under directory node `parent` with `name`; returns its index.
    @discardableResult
    mutating func add(_ name: [UInt8], _ node: Node, in parent: Int = 0) -> Int {
        nodes.append(node)
        link(name, to: nodes.count - 1, in: parent)
        return nodes.count - 1
    }

    @discardableResult
    mutating func add(_ name: String, _ node: Node, in parent: Int = 0) -> Int {
        add(bytes(name), node, in: parent)
    }

    /// Adds another name for an existing node (a hard link).
    mutating func link(_ name: [UInt8], to node: Int, in parent: Int) {
        guard case var .directory(entries) = nodes[parent].content else { preconditionFailure("not a directory") }
        entries.append(DirectoryEntry(name: name, node: node))
        nodes[parent].content = .directory(entries: entries)
    }

    func node(_ content: NodeContent, _ permissions: UInt16 = 0o644) -> Node {
        Node(content: content, permissions: permissions, mtimeSeconds: defaultTime)
    }
}
