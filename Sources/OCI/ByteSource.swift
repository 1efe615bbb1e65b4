import Dispatch
import FerrySystem

/// A pull-style stream of bytes: a layer blob, a decompressed layer, a member of a tarball.
///
/// Readers ask for at most `count` bytes and get a non-empty slice, or nil once the stream has
/// ended. A source may return fewer bytes than asked for at any time.
public protocol ByteSource: AnyObject {
    /// Returns the next bytes (at most `count`, at least one), or nil at the end of the stream.
    func read(upTo count: Int) throws -> ArraySlice<UInt8>?
}

extension ByteSource {
    /// Reads the rest of the stream into memory, failing with `OCIError.tooLarge` beyond `limit`
    /// bytes (manifests and configs are small; a hostile one must not exhaust memory).
    public func readAll(limit: Int, what: String) throws -> [UInt8] {
        var out = [UInt8]()
        while let piece = try read(upTo: 1 << 20) {
            guard out.count + piece.count <= limit else { throw OCIError.tooLarge(what: what, limit: Int64(limit)) }
            out.append(contentsOf: piece)
        }
        return out
    }

    /// Reads and discards the rest of the stream (so that a `VerifyingSource` below sees its end).
    public func drain() throws {
        while try read(upTo: 1 << 20) != nil {}
    }
}

/// A source that can move forward without producing the bytes (a file can seek). `TarReader`
/// uses it to step over the data of members it does not read.
public protocol SkippingByteSource: ByteSource {
    /// Discards up to `count` bytes; returns how many were discarded (fewer only at the end).
    func skip(_ count: Int64) throws -> Int64
}

/// Bytes already in memory.
public final class BytesSource: ByteSource {
    private let bytes: [UInt8]
    private var position = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func read(upTo count: Int) throws -> ArraySlice<UInt8>? {
        guard position < bytes.count, count > 0 else { return nil }
        let end = min(bytes.count, position + count)
        defer { position = end }
        return bytes[position..<end]
    }
}

/// A file, or a byte range of one (a member of an uncompressed tarball), read in large pieces.
public final class FileSource: SkippingByteSource {
    /// Size of each read from the file.
    public static let readSize = 1 << 20
    private let file: FileDescriptor
    fileprivate var offset: UInt64
    fileprivate var remaining: UInt64
    fileprivate var buffer = [UInt8]()
    fileprivate var bufferPosition = 0

    /// Opens `path` and streams `length` bytes from `offset` (the whole file by default).
    ///
    /// A file shorter than the range makes `read` throw `OCIError.io` ("file ended early").
    public init(path: String, offset: UInt64 = 0, length: UInt64? = nil) throws {
        do {
            file = try FileDescriptor.open(path, .readOnly)
        } catch {
            throw OCIError.io(path: path, reason: "\(error)")
        }
        self.offset = offset
        if let length {
            remaining = length
        } else {
            let size: UInt64
            do { size = try file.size() } catch {
                try? file.close()
                throw OCIError.io(path: path, reason: "\(error)")
            }
            remaining = size > offset ? size - offset : 0
        }
    }

    deinit { try? file.close() }

    public func read(upTo count: Int) throws -> ArraySlice<UInt8>? {
        guard count > 0 else { return nil }
        if bufferPosition == buffer.count {
            guard remaining > 0 else { return nil }
            let want = Int(min(UInt64(Self.readSize), remaining))
            // A new array per read: slices of the previous one may still be held downstream (the
            // layer hasher, a chunk being assembled), and writing into it would copy it first.
            do { buffer = try file.read(at: offset, count: want) } catch {
                throw OCIError.io(path: file.name, reason: "\(error)")
            }
            let got = buffer.count
            guard got == want else {
                throw OCIError.io(path: file.name, reason: "file ended early at offset \(offset + UInt64(got)) (expected \(remaining - UInt64(got)) more bytes)")
            }
            offset += UInt64(got)
            remaining -= UInt64(got)
            bufferPosition = 0
        }
        let end = min(buffer.count, bufferPosition + count)
        defer { bufferPosition = end }
        return buffer[bufferPosition..<end]
    }
}

extension FileSource {
    public func skip(_ count: Int64) throws -> Int64 {
        guard count > 0 else { return 0 }
        let buffered = Int64(buffer.count - bufferPosition)
        if count <= buffered {
            bufferPosition += Int(count)
            return count
        }
        bufferPosition = buffer.count
        let fromFile = min(UInt64(count - buffered), remaining)
        offset += fromFile
        remaining -= fromFile
        return buffered + Int64(fromFile)
    }
}

/// Passes bytes through while hashing them; at the end of the stream checks size and digest
/// against a descriptor, so that nothing unverified is ever treated as complete.
public final class VerifyingSource: ByteSource {
    private let source: any ByteSource
    private let expectedDigest: Digest
    private let expectedSize: Int64
    private let what: String
    /// The digest is computed on its own serial queue, off the thread that parses the stream;
    /// at most 16 pieces wait for it (bounded memory).
    private let hasher = HasherBox()
    private let hashQueue = DispatchQueue(label: "ferry.layer-digest")
    private let inFlight = DispatchSemaphore(value: 16)
    private var count: Int64 = 0
    private var verified = false

    /// Owns the SHA-256 state; touched only on `hashQueue`.
    private final class HasherBox: @unchecked Sendable {
        let sha = SHA256()
    }

    /// Wraps `source`; `what` names the blob in errors (e.g. "layer sha256:…").
    /// Only sha256 digests can be checked; others throw `unsupportedDigest`.
    public init(_ source: any ByteSource, expecting descriptor: Descriptor, what: String) throws {
        guard descriptor.digest.algorithm == "sha256" else { throw OCIError.unsupportedDigest(what: what, digest: descriptor.digest) }
        self.source = source
        expectedDigest = descriptor.digest
        expectedSize = descriptor.size
        self.what = what
    }

    public func read(upTo count: Int) throws -> ArraySlice<UInt8>? {
        guard !verified else { return nil }
        guard let piece = try source.read(upTo: count) else {
            guard self.count == expectedSize else { throw OCIError.sizeMismatch(what: what, expected: expectedSize, actual: self.count) }
            let hasher = self.hasher
            let actual = Digest(sha256: hashQueue.sync { hasher.sha.finalize() })
            guard actual == expectedDigest else { throw OCIError.digestMismatch(what: what, expected: expectedDigest, actual: actual) }
            verified = true
            return nil
        }
        self.count += Int64(piece.count)
        guard self.count <= expectedSize else {
            throw OCIError.sizeMismatch(what: what, expected: expectedSize, actual: self.count)
        }
        let hasher = self.hasher, inFlight = self.inFlight
        inFlight.wait()
        hashQueue.async {
            hasher.sha.update(piece)
            inFlight.signal()
        }
        return piece
    }
}
