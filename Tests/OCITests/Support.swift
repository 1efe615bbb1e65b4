import Foundation
import Testing
@testable import OCI

/// Builds tar archives header by header, for inputs that tools will not write (bad checksums,
/// base-256 fields, truncation).
struct TarBuilder {
    var bytes: [UInt8] = []

    enum Magic { case ustar, gnu, v7 }

    /// Appends one 512-byte header. Numbers are octal unless given as raw field bytes.
    mutating func header(name: [UInt8], type: UInt8 = UInt8(ascii: "0"), size: Int64 = 0, mode: Int64 = 0o644,
                         uid: Int64 = 0, gid: Int64 = 0, mtime: Int64 = 0, linkname: [UInt8] = [],
                         magic: Magic = .ustar, prefix: [UInt8] = [], devMajor: Int64 = 0, devMinor: Int64 = 0,
                         rawFields: [Int: [UInt8]] = [:], corruptChecksum: Bool = false) {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ offset: Int, _ field: [UInt8]) { for (i, b) in field.enumerated() { block[offset + i] = b } }
        func octal(_ offset: Int, _ width: Int, _ value: Int64) {
            let text = String(value, radix: 8)
            put(offset, Array((String(repeating: "0", count: max(0, width - 1 - text.count)) + text).utf8) + [0])
        }
        put(0, Array(name.prefix(100)))
        octal(100, 8, mode)
        octal(108, 8, uid)
        octal(116, 8, gid)
        octal(124, 12, size)
        octal(136, 12, mtime)
        block[156] = type
        put(157, Array(linkname.prefix(100)))
        switch magic {
        case .ustar: put(257, Array("ustar\u{0}00".utf8))
        case .gnu: put(257, Array("ustar  \u{0}".utf8))
        case .v7: break
        }
        if magic != .v7 {
            octal(329, 8, devMajor)
            octal(337, 8, devMinor)
        }
        put(345, prefix)
        for (offset, raw) in rawFields { put(offset, raw) }
        put(148, Array("        ".utf8))
        let sum = block.reduce(0) { $0 + Int($1) } + (corruptChecksum ? 1 : 0)
        let text = String(sum, radix: 8)
        put(148, Array((String(repeating: "0", count: 6 - text.count) + text).utf8) + [0, 0x20])
        bytes += block
    }

    mutating func header(_ name: String, type: Character = "0", size: Int64 = 0, linkname: String = "") {
        header(name: Array(name.utf8), type: type.asciiValue ?? 0, size: size, linkname: Array(linkname.utf8))
    }

    /// Appends data padded to the block size.
    mutating func data(_ content: [UInt8]) {
        bytes += content
        let pad = (512 - content.count % 512) % 512
        bytes += [UInt8](repeating: 0, count: pad)
    }

    mutating func file(_ name: String, _ content: String) {
        header(name, size: Int64(content.utf8.count))
        data(Array(content.utf8))
    }

    /// A PAX extended header ('x' or 'g') with the given records.
    mutating func pax(_ records: [(String, [UInt8])], global: Bool = false) {
        var body = [UInt8]()
        for (key, value) in records {
            let payload = Array(" \(key)=".utf8) + value + [0x0a]
            var length = payload.count + 1
            while String(length).count + payload.count != length { length = String(length).count + payload.count }
            body += Array(String(length).utf8) + payload
        }
        header(name: Array("PaxHeader".utf8), type: UInt8(ascii: global ? "g" : "x"), size: Int64(body.count))
        data(body)
    }

    mutating func end() { bytes += [UInt8](repeating: 0, count: 1024) }
}

/// Reads every entry and its data.
func readTar(_ bytes: [UInt8], layer: String = "test-layer", pieceSize: Int = 7) throws -> [(entry: TarEntry, data: [UInt8])] {
    let reader = TarReader(source: BytesSource(bytes), layer: layer)
    var out: [(entry: TarEntry, data: [UInt8])] = []
    while let entry = try reader.next() {
        var data = [UInt8]()
        while let piece = try reader.readData(upTo: pieceSize) { data += piece }
        out.append((entry, data))
    }
    return out
}

func components(_ path: String) -> [[UInt8]] {
    path.split(separator: "/").map { Array($0.utf8) }
}

/// Runs `body` and checks it throws an `OCIError` that `matches` accepts.
func expectOCIError(_ what: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void,
                    matches: (OCIError) -> Bool) {
    do {
        try body()
        Issue.record("\(what): no error thrown", sourceLocation: sourceLocation)
    } catch let error as OCIError {
        #expect(matches(error), "\(what): unexpected error \(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("\(what): not an OCIError: \(error)", sourceLocation: sourceLocation)
    }
}

/// A fresh empty directory under the system temporary directory.
func makeTemporaryDirectory(_ label: String) throws -> String {
    let path = NSTemporaryDirectory() + "ferry-oci-\(label)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Finds an executable on PATH.
func which(_ tool: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(tool)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

struct ToolFailure: Error, CustomStringConvertible {
    var description: String
}

/// Runs a tool to completion; throws with its stderr when it fails.
@discardableResult
func run(_ tool: String, _ arguments: [String], directory: String? = nil) throws -> String {
    guard let executable = which(tool) else { throw ToolFailure(description: "\(tool) not found on PATH") }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ToolFailure(description: "\(tool) \(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): \(String(decoding: stderr, as: UTF8.self))")
    }
    return String(decoding: stdout, as: UTF8.self)
}

/// Runs a python3 script with arguments (fixtures made with the standard `tarfile` module).
func python(_ script: String, _ arguments: [String] = []) throws {
    try run("python3", ["-c", script] + arguments)
}

func readFile(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// `shared/testdata/nydus` beside the repository (the checkout's parent folder holds `shared/`).
let nydusTestData = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/testdata/nydus").path
