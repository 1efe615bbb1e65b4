import Foundation
import Blob
import FerrySystem
import Synchronization

extension FerryDaemon {
    /// What `GET /trace` answers: an image's access trace, resolved to the files that hold each chunk.
    public struct TraceReport: Codable, Sendable {
        /// The reference the image was mounted from.
        public var image: String
        public var id: String
        public var mountpoints: [String]
        /// When the trace began (the image's first mount), ISO 8601.
        public var mountTime: String
        /// First reads of blob chunks, oldest first.
        public var entries: [Entry]
        /// Distinct chunks first read after the trace was full (not in `entries`).
        public var overflow: Int
        /// Files in the order their first chunk was read.
        public var files: [File]

        public struct Entry: Codable, Sendable, Equatable {
            /// "sha256:<hex>" of the blob.
            public var blob: String
            /// The chunk's index in the blob's chunk table.
            public var chunk: Int
            /// Milliseconds from `mountTime` to the first request for the chunk.
            public var offsetMs: Double
            /// The files whose chunk-index tables name this chunk (empty: none, e.g. metadata only).
            public var paths: [String]
            enum CodingKeys: String, CodingKey { case blob, chunk, offsetMs = "offset_ms", paths }
        }

        public struct File: Codable, Sendable, Equatable {
            public var path: String
            /// Milliseconds from `mountTime` to the first read of any of its chunks.
            public var offsetMs: Double
            /// Its chunks in the trace.
            public var chunksRead: Int
            /// Its chunks in all (counting a chunk named twice once).
            public var chunks: Int
            enum CodingKeys: String, CodingKey { case path, offsetMs = "offset_ms", chunksRead = "chunks_read", chunks }
        }

        enum CodingKeys: String, CodingKey {
            case image, id, mountpoints, mountTime = "mount_time", entries, overflow, files
        }
    }

    /// The registered image mounted at `mountpoint`, or whose id starts with (or whose reference
    /// is) `image`.
    func tracedImage(mountpoint: String?, image: String?) throws(TraceLookupError) -> RegisteredImage {
        let (images, mounts) = state.withLock { ($0.images, $0.mounts) }
        if let mountpoint {
            let canonical = MountpointPath.normalized(mountpoint)
            guard let id = mounts[canonical]?.imageID, let found = images[id] else { throw .notFound("no ferryd mount at \(canonical)") }
            return found
        }
        guard let image, !image.isEmpty else { throw .notFound("missing ?mount=PATH or ?image=ID") }
        let matches = images.values.filter { $0.id.hasPrefix(image) || $0.reference == image }
        guard let found = matches.first else { throw .notFound("no registered image \(image)") }
        guard matches.count == 1 else { throw .ambiguous("\(image) names \(matches.count) images; give more of the id") }
        return found
    }

    /// Why `GET /trace` found no single image.
    enum TraceLookupError: Error {
        case notFound(String)
        case ambiguous(String)
    }

    /// The trace of `image` with paths resolved from its bootstrap (read on a thread of its own).
    func traceReport(of image: RegisteredImage) async throws -> TraceReport {
        let snapshot = image.trace.snapshot()
        let mountpoints = state.withLock { s in
            s.mounts.filter { $0.value.imageID == image.id && $0.value.phase == .mounted }.map(\.key).sorted()
        }
        let wanted = Set(snapshot.entries.map { BlobChunk(blob: Int($0.blob), chunk: Int($0.chunk)) })
        let naming = try await DedicatedThread.run {
            try FileChunks.files(naming: wanted, bootstrap: image.bootstrapPath, metadata: image.metadata)
        }
        return Self.report(image: image, snapshot: snapshot, files: naming, mountpoints: mountpoints)
    }

    static func report(image: RegisteredImage, snapshot: AccessTrace.Snapshot, files: [FileChunks.NamingFile],
                       mountpoints: [String]) -> TraceReport {
        var pathsByChunk: [BlobChunk: [String]] = [:]
        var fileChunkCounts: [String: Int] = [:]
        for file in files {
            let distinct = Set(file.chunks)
            fileChunkCounts[file.path] = distinct.count
            for chunk in distinct { pathsByChunk[chunk, default: []].append(file.path) }
        }
        var entries: [TraceReport.Entry] = []
        var order: [String] = []
        var firstOffset: [String: Double] = [:]
        var readCounts: [String: Int] = [:]
        entries.reserveCapacity(snapshot.entries.count)
        for entry in snapshot.entries {
            let key = BlobChunk(blob: Int(entry.blob), chunk: Int(entry.chunk))
            let offset = Double(entry.offsetNanoseconds / 1000) / 1000
            let paths = pathsByChunk[key] ?? []
            let blob = Int(entry.blob) < image.metadata.blobs.count ? "sha256:" + image.metadata.blobs[Int(entry.blob)].hexDigest : "?"
            entries.append(TraceReport.Entry(blob: blob, chunk: key.chunk, offsetMs: offset, paths: paths))
            for path in paths {
                if firstOffset[path] == nil {
                    firstOffset[path] = offset
                    order.append(path)
                }
                readCounts[path, default: 0] += 1
            }
        }
        let summary = order.map { path in
            TraceReport.File(path: path, offsetMs: firstOffset[path] ?? 0, chunksRead: readCounts[path] ?? 0,
                             chunks: fileChunkCounts[path] ?? 0)
        }
        return TraceReport(image: image.reference, id: image.id, mountpoints: mountpoints,
                           mountTime: ISO8601DateFormatter().string(from: image.trace.started), entries: entries,
                           overflow: snapshot.overflow, files: summary)
    }
}
