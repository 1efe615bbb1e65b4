import Foundation

/// Random-access bytes of an image: in memory or a file read on demand.
protocol ImageSource: Sendable {
    var size: UInt64 { get }
    /// Exactly `count` bytes at `offset`; throws `EROFSError.truncated` past the end.
    func read(at offset: UInt64, count: Int, what: String) throws -> [UInt8]
}

extension ImageSource {
    func checkRange(_ offset: UInt64, _ count: Int, what: String) throws {
        guard count >= 0, offset <= size, size - offset >= UInt64(count) else {
            throw EROFSError.truncated(what: what, offset: offset, needed: UInt64(max(count, 0)),
                                       available: offset <= size ? size - offset : 0)
        }
    }
}

struct MemorySource: ImageSource {
    let bytes: [UInt8]
    var size: UInt64 { UInt64(bytes.count) }

    func read(at offset: UInt64, count: Int, what: String) throws -> [UInt8] {
        try checkRange(offset, count, what: what)
        return Array(bytes[Int(offset)..<Int(offset) + count])
    }
}

/// Reads through one `FileHandle`; seek + read pairs are serialised by a lock.
final class FileSource: ImageSource, @unchecked Sendable {
    // Safe because: `handle` is only touched while `lock` is held.
    private let handle: FileHandle
    private let lock = NSLock()
    let path: String
    let size: UInt64

    init(path: String) throws {
        self.path = path
        do {
            handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            size = try handle.seekToEnd()
        } catch {
            throw EROFSError.io(path: path, reason: "\(error)")
        }
    }

    deinit { try? handle.close() }

    func read(at offset: UInt64, count: Int, what: String) throws -> [UInt8] {
        try checkRange(offset, count, what: what)
        if count == 0 { return [] }
        lock.lock()
        defer { lock.unlock() }
        do {
            try handle.seek(toOffset: offset)
            var result = [UInt8]()
            result.reserveCapacity(count)
            while result.count < count {
                guard let chunk = try handle.read(upToCount: count - result.count), !chunk.isEmpty else { break }
                result.append(contentsOf: chunk)
            }
            guard result.count == count else {
                throw EROFSError.truncated(what: what, offset: offset, needed: UInt64(count), available: UInt64(result.count))
            }
            return result
        } catch let error as EROFSError {
            throw error
        } catch {
            throw EROFSError.io(path: path, reason: "\(error)")
        }
    }
}
