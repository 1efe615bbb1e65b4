import FerrySystem
import Foundation
import Testing
@testable import OCI

/// Every kind of bad input gives its own error case, naming the layer and the entry.
@Suite struct BadInputTests {
    static func validTar() -> [UInt8] {
        var tar = TarBuilder()
        tar.header("dir/", type: "5")
        tar.file("dir/file", String(repeating: "z", count: 1000))
        tar.end()
        return tar.bytes
    }

    @Test(arguments: [100, 512 + 300, 1024 + 700, 1024 + 1000])
    func truncatedTarNamesTheEntry(cut: Int) {
        let bytes = Array(Self.validTar().prefix(cut))
        expectOCIError("cut at \(cut)", { _ = try readTar(bytes, layer: "L1") }) {
            guard case let .malformedTar(layer, entry, _) = $0, layer == "L1" else { return false }
            // Cut inside a header nothing is known of the entry; inside data or padding it is named.
            return cut < 1024 ? entry == nil : entry == "dir/file"
        }
    }

    @Test func badChecksum() {
        var tar = TarBuilder()
        tar.header(name: Array("bad".utf8), corruptChecksum: true)
        tar.end()
        expectOCIError("checksum", { _ = try readTar(tar.bytes, layer: "L2") }) {
            if case let .malformedTar(layer, entry, reason) = $0 { return layer == "L2" && entry == "bad" && reason.contains("checksum") }
            return false
        }
    }

    /// Found by `Tools/fuzz tar`: a header's size rounded up to whole blocks overflowed Int64 (a trap).
    @Test(arguments: [UInt8(ascii: "V"), UInt8(ascii: "0"), UInt8(ascii: "x")])
    func base256SizeNearInt64MaxIsAnError(type: UInt8) {
        var tar = TarBuilder()
        // GNU base-256: 0x80, then Int64.max big-endian in the remaining 11 bytes.
        let size: [UInt8] = [0x80, 0, 0, 0, 0x7f] + [UInt8](repeating: 0xff, count: 7)
        tar.header(name: Array("huge".utf8), type: type, rawFields: [124: size])
        tar.end()
        expectOCIError("size", { _ = try readTar(tar.bytes, layer: "L") }) {
            if case let .malformedTar(layer, entry, reason) = $0 { return layer == "L" && entry == "huge" && reason.contains("out of range") }
            return false
        }
    }

    @Test func zeroBlockFollowedByData() {
        var tar = TarBuilder()
        tar.bytes += [UInt8](repeating: 0, count: 512)
        tar.file("late", "x")
        expectOCIError("zero block", { _ = try readTar(tar.bytes, layer: "L") }) {
            if case .malformedTar = $0 { return true }
            return false
        }
    }

    @Test(arguments: [("../x", "\"..\""), ("a/../../x", "\"..\""), ("/etc/x", "absolute")])
    func unsafePaths(path: String, reason: String) {
        var tar = TarBuilder()
        tar.file(path, "x")
        tar.end()
        expectOCIError(path, { _ = try readTar(tar.bytes, layer: "L3") }) {
            if case let .unsafePath(layer, entry, why) = $0 { return layer == "L3" && entry == path && why.contains(reason) }
            return false
        }
    }

    @Test(arguments: ["../x", "/etc/passwd"])
    func unsafeHardlinkTargets(target: String) {
        var tar = TarBuilder()
        tar.header("link", type: "1", linkname: target)
        tar.end()
        expectOCIError(target, { _ = try readTar(tar.bytes, layer: "L4") }) {
            if case let .unsafePath(layer, entry, why) = $0 { return layer == "L4" && entry == "link" && why.contains(target) }
            return false
        }
    }

    @Test func symlinkTargetsAreKeptAsData() throws {
        var tar = TarBuilder()
        tar.header("link", type: "2", linkname: "../../etc//passwd")
        tar.end()
        #expect(try readTar(tar.bytes).first?.entry.symlinkTarget == Array("../../etc//passwd".utf8))
    }

    @Test func unknownTypesAreRejected() {
        var tar = TarBuilder()
        tar.header("odd", type: "Z")
        tar.end()
        expectOCIError("type Z", { _ = try readTar(tar.bytes, layer: "L") }) {
            if case let .unsupportedTarEntry(_, entry, why) = $0 { return entry == "odd" && why.contains("'Z'") }
            return false
        }
    }

    /// Sparse maps that cannot describe the stored data are errors, not silently wrong files.
    @Test(arguments: [
        ([("GNU.sparse.major", "1")], "x", "real size"),
        ([("GNU.sparse.map", "0,1,5"), ("GNU.sparse.size", "9")], "x", "pairs"),
        ([("GNU.sparse.map", "4,1,0,1"), ("GNU.sparse.size", "9")], "xx", "overlaps or precedes"),
        ([("GNU.sparse.map", "8,4"), ("GNU.sparse.size", "9")], "xxxx", "beyond the size"),
        ([("GNU.sparse.map", "0,3"), ("GNU.sparse.size", "9")], "x", "stores 3 bytes"),
        ([("GNU.sparse.offset", "0"), ("GNU.sparse.size", "9")], "x", "pair up"),
    ])
    func malformedSparseMapsAreRejected(_ records: [(String, String)], data: String, reason: String) {
        var tar = TarBuilder()
        tar.pax(records.map { ($0.0, Array($0.1.utf8)) })
        tar.file("sparse", data)
        tar.end()
        expectOCIError(reason, { _ = try readTar(tar.bytes, layer: "L") }) {
            if case let .malformedTar(_, entry, why) = $0 { return entry == "sparse" && why.contains(reason) }
            return false
        }
    }

    @Test func badGzipNamesTheLayer() throws {
        var packed = try Gzip.compress(Self.validTar())
        packed[packed.count / 2] ^= 0xff
        packed.removeLast(4)
        expectOCIError("gzip", {
            let source = try DecompressingSource(BytesSource(packed), mediaType: MediaType.ociLayerGzip, layer: "sha256:abc")
            _ = try readTar(try source.readAll(limit: 1 << 20, what: "layer"), layer: "sha256:abc")
        }) {
            if case let .badCompression(layer, _) = $0 { return layer == "sha256:abc" }
            return false
        }
    }

    @Test func truncatedZstdNamesTheLayer() throws {
        let packed = try Zstd.compress(Self.validTar())
        expectOCIError("zstd", {
            let source = try DecompressingSource(BytesSource(Array(packed.dropLast(3))), mediaType: MediaType.ociLayerZstd, layer: "sha256:def")
            _ = try source.readAll(limit: 1 << 20, what: "layer")
        }) {
            if case let .badCompression(layer, _) = $0 { return layer == "sha256:def" }
            return false
        }
    }

    @Test func unknownMediaType() {
        expectOCIError("media type", {
            _ = try DecompressingSource(BytesSource([]), mediaType: "application/vnd.oci.image.layer.v1.tar+lz4", layer: "L")
        }) {
            if case let .unsupportedMediaType(_, mediaType) = $0 { return mediaType.hasSuffix("+lz4") }
            return false
        }
    }

    @Test func digestAndSizeMismatchAtEndOfStream() throws {
        let bytes = Self.validTar()
        let right = Descriptor(mediaType: MediaType.ociLayerTar, digest: Digest(sha256: SHA256.hash(bytes)), size: Int64(bytes.count))
        // The matching descriptor reads to the end without error.
        _ = try readTar(try VerifyingSource(BytesSource(bytes), expecting: right, what: "layer ok").readAll(limit: 1 << 20, what: "x"))

        var wrongDigest = right
        wrongDigest.digest = Digest(sha256: SHA256.hash([1]))
        expectOCIError("digest", {
            let reader = TarReader(source: try VerifyingSource(BytesSource(bytes), expecting: wrongDigest, what: "layer sha256:1"), layer: "sha256:1")
            while try reader.next() != nil {}
        }) {
            if case let .digestMismatch(what, expected, actual) = $0 {
                return what == "layer sha256:1" && expected == wrongDigest.digest && actual == right.digest
            }
            return false
        }
        for size in [right.size - 1, right.size + 1] {
            var wrongSize = right
            wrongSize.size = size
            expectOCIError("size \(size)", {
                _ = try VerifyingSource(BytesSource(bytes), expecting: wrongSize, what: "layer s").readAll(limit: 1 << 20, what: "x")
            }) {
                if case let .sizeMismatch(what, expected, _) = $0 { return what == "layer s" && expected == size }
                return false
            }
        }
    }

    @Test func gzipAndZstdLayersDecompress() throws {
        let tar = Self.validTar()
        for (mediaType, packed) in [(MediaType.ociLayerGzip, try Gzip.compress(tar)), (MediaType.ociLayerZstd, try Zstd.compress(tar)),
                                    (MediaType.dockerLayerTar, tar)] {
            let source = try DecompressingSource(BytesSource(packed), mediaType: mediaType, layer: "L")
            #expect(try source.readAll(limit: 1 << 20, what: "layer") == tar, "\(mediaType)")
        }
        #expect(LayerCompression(sniffing: try Gzip.compress(tar)[...]) == .gzip)
        #expect(LayerCompression(sniffing: try Zstd.compress(tar)[...]) == .zstd)
        #expect(LayerCompression(sniffing: tar[...]) == .none)
    }
}

@Suite struct FileSourceTests {
    /// Skipping unread data seeks in the file; a file cut inside a member's data still fails.
    @Test func truncatedTarFileFailsWhenSkippingData() throws {
        let dir = try makeTemporaryDirectory("file")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var tar = TarBuilder()
        tar.file("big", String(repeating: "b", count: 5000))
        tar.file("next", "n")
        tar.end()
        try writeFile("\(dir)/whole.tar", tar.bytes)
        try writeFile("\(dir)/cut.tar", Array(tar.bytes.prefix(3000)))
        let whole = TarReader(source: try FileSource(path: "\(dir)/whole.tar"), layer: "whole")
        #expect(try whole.next()?.path == components("big"))
        #expect(try whole.next()?.path == components("next"))
        #expect(whole.dataOffset == 512 + 5120 + 512)
        #expect(try whole.readData(upTo: 10).map(Array.init) == Array("n".utf8))
        #expect(try whole.next() == nil)
        let cut = TarReader(source: try FileSource(path: "\(dir)/cut.tar"), layer: "cut")
        _ = try cut.next()
        expectOCIError("cut", { _ = try cut.next() }) {
            if case let .malformedTar(layer, entry, _) = $0 { return layer == "cut" && entry == "big" }
            return false
        }
        // A byte range of a file reads exactly that range.
        let range = try FileSource(path: "\(dir)/whole.tar", offset: 512, length: 5000).readAll(limit: 1 << 20, what: "range")
        #expect(range == [UInt8](repeating: UInt8(ascii: "b"), count: 5000))
        expectOCIError("not a layout", { _ = try ImageReference(parsing: "oci:\(dir)/nothing:tag").openLocalSource() }) {
            if case .malformedImageStore = $0 { return true }
            return false
        }
        #expect(try ImageReference(parsing: "docker://localhost:5000/x:1").openLocalSource() == nil)
    }
}
