import Blob
import EROFS
import FerrySystem

/// Places encoded chunks into data blobs, one blob per source layer, storing each distinct
/// chunk once across the whole image (and not at all when a chunk dictionary already has it).
///
/// It also numbers the EROFS devices: a blob gets the next device id when its first chunk is
/// written, so layers whose chunks are all duplicates get no blob and no device, and the
/// numbering depends only on the input order (reproducible output).
final class BlobAssembler {
    /// A blob that is (or will be) a device of the image.
    struct Device {
        var info: BlobInfo
        /// Where the blob file is on disk (for blobs written by this conversion or found in a dictionary).
        var path: String
        /// True when the blob comes from a chunk dictionary rather than from this conversion.
        var fromDictionary: Bool
    }

    private struct Location { var device: UInt16; var block: UInt32 }

    /// A chunk digest as a dictionary key. `[UInt8]` hashes byte by byte (32 hasher rounds per
    /// lookup, a few percent of a conversion's CPU); this hashes the digest as 64-bit words.
    private struct DigestKey: Hashable {
        let bytes: [UInt8]
        init(_ bytes: [UInt8]) { self.bytes = bytes }
        static func == (lhs: DigestKey, rhs: DigestKey) -> Bool { lhs.bytes == rhs.bytes }
        func hash(into hasher: inout Hasher) {
            hasher.combine(bytes.count)
            var word: UInt64 = 0
            for (i, byte) in bytes.enumerated() {
                word = word << 8 | UInt64(byte)
                if i % 8 == 7 { hasher.combine(word); word = 0 }
            }
            hasher.combine(word)
        }
    }

    private var index: [DigestKey: Location] = [:]
    /// Dictionary chunks that are not yet devices: digest → (dictionary blob number, chunk).
    private var dictionaryChunks: [DigestKey: (blob: Int, chunk: ChunkInfo)] = [:]
    private var dictionaryBlobs: [(info: BlobInfo, path: String)] = []
    private var dictionaryDevice: [Int: UInt16] = [:]

    private(set) var devices: [Device] = []
    private var current: BlobWriter?
    private var currentPath = ""
    private var currentDevice: UInt16 = 0
    private let scratchDirectory: String
    private var blobCounter = 0

    /// Counters for the summary.
    private(set) var chunksSeen = 0
    private(set) var chunksDeduplicated = 0
    private(set) var zeroChunks = 0
    private(set) var bytesSeen: UInt64 = 0
    private(set) var bytesDeduplicated: UInt64 = 0

    /// Whether all-zero chunks become holes (see `ConversionOptions.zeroChunksAsHoles`).
    private let zeroChunksAsHoles: Bool

    /// - Parameter scratchDirectory: where blob files are written before they get their digest names.
    init(scratchDirectory: String, zeroChunksAsHoles: Bool) {
        self.scratchDirectory = scratchDirectory
        self.zeroChunksAsHoles = zeroChunksAsHoles
    }

    /// Makes the chunks of another image's blobs available for deduplication (`--chunk-dict`).
    /// A dictionary blob becomes a device of this image only if one of its chunks is used.
    func addDictionary(blob: BlobInfo, path: String) {
        let number = dictionaryBlobs.count
        dictionaryBlobs.append((blob, path))
        for chunk in blob.chunks where dictionaryChunks[DigestKey(chunk.digest)] == nil {
            dictionaryChunks[DigestKey(chunk.digest)] = (number, chunk)
        }
    }

    /// Starts the blob of the next source layer (written only if it receives a chunk).
    func beginLayer() {
        current = nil
    }

    /// Stores `chunk` (or finds it already stored) and returns where the image refers to it.
    func place(_ chunk: EncodedChunk) throws -> ChunkReference {
        chunksSeen += 1
        bytesSeen += UInt64(chunk.uncompressedSize)
        if chunk.isAllZero {
            zeroChunks += 1
            if zeroChunksAsHoles { return .hole }
        }
        let key = DigestKey(chunk.digest)
        if let found = index[key] {
            chunksDeduplicated += 1
            bytesDeduplicated += UInt64(chunk.uncompressedSize)
            return .stored(device: found.device, block: found.block)
        }
        if let (blobNumber, info) = dictionaryChunks[key], info.uncompressedSize == chunk.uncompressedSize {
            chunksDeduplicated += 1
            bytesDeduplicated += UInt64(chunk.uncompressedSize)
            let device = try dictionaryDeviceID(blobNumber)
            let location = Location(device: device, block: UInt32(info.uncompressedOffset / blobBlockSize))
            index[key] = location
            return .stored(device: location.device, block: location.block)
        }
        let writer = try currentWriter()
        let (_, info) = try writer.append(chunk)
        guard info.uncompressedOffset / blobBlockSize <= UInt64(UInt32.max - 1) else {
            throw ConversionError.limitExceeded("a blob's address space exceeds 16 TiB")
        }
        let location = Location(device: currentDevice, block: UInt32(info.uncompressedOffset / blobBlockSize))
        index[key] = location
        return .stored(device: location.device, block: location.block)
    }

    /// Finishes the current layer's blob, if it was started.
    func endLayer() throws {
        guard let writer = current else { return }
        current = nil
        let info = try writer.finish()
        devices[Int(currentDevice) - 1] = Device(info: info, path: writer.path, fromDictionary: false)
    }

    /// Closes any open blob without finishing it (on failure).
    func abandon() {
        current?.abandon()
        current = nil
    }

    private func currentWriter() throws -> BlobWriter {
        if let current { return current }
        guard devices.count < Int(UInt16.max) else { throw ConversionError.limitExceeded("more than 65535 blobs") }
        blobCounter += 1
        let path = "\(scratchDirectory)/blob-\(blobCounter).tmp"
        let writer = try BlobWriter(path: path)
        current = writer
        // Placeholder until endLayer() knows the digest.
        devices.append(Device(info: BlobInfo(digest: [], compressedSize: 0, uncompressedSize: 0, chunks: []), path: path, fromDictionary: false))
        currentDevice = UInt16(devices.count)
        return writer
    }

    private func dictionaryDeviceID(_ number: Int) throws -> UInt16 {
        if let id = dictionaryDevice[number] { return id }
        guard devices.count < Int(UInt16.max) else { throw ConversionError.limitExceeded("more than 65535 blobs") }
        let (info, path) = dictionaryBlobs[number]
        devices.append(Device(info: info, path: path, fromDictionary: true))
        // A layer blob being written keeps its device id: it was appended before.
        let id = UInt16(devices.count)
        dictionaryDevice[number] = id
        return id
    }
}
