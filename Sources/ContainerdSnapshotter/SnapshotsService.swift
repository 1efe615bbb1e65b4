public import ContainerdAPI
import Foundation
public import GRPCCore
public import Logging
public import SwiftProtobuf

/// `containerd.services.snapshots.v1.Snapshots` over `Snapshotter`: what containerd's proxy
/// plugin (`[proxy_plugins.ferry] type = "snapshot"`) calls. Errors carry the gRPC codes
/// containerd turns back into its own (`NOT_FOUND`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`, …).
public struct SnapshotsService: Containerd_Services_Snapshots_V1_Snapshots.SimpleServiceProtocol {
    let snapshotter: Snapshotter
    let logger: Logger

    public init(snapshotter: Snapshotter, logger: Logger) {
        self.snapshotter = snapshotter
        self.logger = logger
    }

    public func prepare(request: Containerd_Services_Snapshots_V1_PrepareSnapshotRequest,
                        context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_PrepareSnapshotResponse {
        try await answering("Prepare \(request.key)") {
            let mounts = try await snapshotter.prepare(key: request.key, parent: request.parent, labels: request.labels)
            return .with { $0.mounts = mounts.map(Self.message) }
        }
    }

    public func view(request: Containerd_Services_Snapshots_V1_ViewSnapshotRequest,
                     context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_ViewSnapshotResponse {
        try await answering("View \(request.key)") {
            let mounts = try await snapshotter.view(key: request.key, parent: request.parent, labels: request.labels)
            return .with { $0.mounts = mounts.map(Self.message) }
        }
    }

    public func mounts(request: Containerd_Services_Snapshots_V1_MountsRequest,
                       context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_MountsResponse {
        try await answering("Mounts \(request.key)") {
            let mounts = try await snapshotter.mounts(key: request.key)
            return .with { $0.mounts = mounts.map(Self.message) }
        }
    }

    public func commit(request: Containerd_Services_Snapshots_V1_CommitSnapshotRequest,
                       context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await answering("Commit \(request.key) as \(request.name)") {
            try await snapshotter.commit(name: request.name, key: request.key, labels: request.labels)
            return Google_Protobuf_Empty()
        }
    }

    public func remove(request: Containerd_Services_Snapshots_V1_RemoveSnapshotRequest,
                       context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await answering("Remove \(request.key)") {
            try await snapshotter.remove(key: request.key)
            return Google_Protobuf_Empty()
        }
    }

    public func stat(request: Containerd_Services_Snapshots_V1_StatSnapshotRequest,
                     context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_StatSnapshotResponse {
        try await answering("Stat \(request.key)") {
            let record = try await snapshotter.stat(key: request.key)
            return .with { $0.info = Self.info(record) }
        }
    }

    public func update(request: Containerd_Services_Snapshots_V1_UpdateSnapshotRequest,
                       context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UpdateSnapshotResponse {
        try await answering("Update \(request.info.name)") {
            let record = try await snapshotter.update(key: request.info.name, labels: request.info.labels,
                                                      paths: request.hasUpdateMask ? request.updateMask.paths : [])
            return .with { $0.info = Self.info(record) }
        }
    }

    public func list(request: Containerd_Services_Snapshots_V1_ListSnapshotsRequest,
                     response: RPCWriter<Containerd_Services_Snapshots_V1_ListSnapshotsResponse>,
                     context: ServerContext) async throws {
        let records = try await answering("List") { try await snapshotter.list(filters: request.filters) }
        // Batches of 100, as containerd's own proxy server sends them.
        var start = 0
        repeat {
            let batch = records[start..<min(records.count, start + 100)]
            try await response.write(.with { $0.info = batch.map(Self.info) })
            start += 100
        } while start < records.count
    }

    public func usage(request: Containerd_Services_Snapshots_V1_UsageRequest,
                      context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UsageResponse {
        try await answering("Usage \(request.key)") {
            let usage = try await snapshotter.usage(key: request.key)
            return .with { $0.size = usage.bytes; $0.inodes = usage.inodes }
        }
    }

    public func cleanup(request: Containerd_Services_Snapshots_V1_CleanupRequest,
                        context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await answering("Cleanup") {
            try await snapshotter.cleanup()
            return Google_Protobuf_Empty()
        }
    }

    /// Runs one call, logging it, and turns its error into the status containerd expects.
    private func answering<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            let value = try await body()
            logger.debug("snapshots: \(what)")
            return value
        } catch let error as SnapshotError {
            if error.kind == .alreadyExists || error.kind == .notFound {
                logger.debug("snapshots: \(what): \(error)")
            } else {
                logger.warning("snapshots: \(what) failed", metadata: ["error": "\(error)"])
            }
            throw RPCError(code: Self.code(error.kind), message: error.message)
        } catch let error as RPCError {
            throw error
        } catch {
            logger.error("snapshots: \(what) failed", metadata: ["error": "\(error)"])
            throw RPCError(code: .internalError, message: "\(what): \(error)")
        }
    }

    static func code(_ kind: SnapshotError.Kind) -> RPCError.Code {
        switch kind {
        case .notFound: return .notFound
        case .alreadyExists: return .alreadyExists
        case .failedPrecondition: return .failedPrecondition
        case .invalidArgument: return .invalidArgument
        case .unavailable: return .unavailable
        case .internalError: return .internalError
        }
    }

    static func message(_ mount: SnapshotMount) -> Containerd_Types_Mount {
        .with { $0.type = mount.type; $0.source = mount.source; $0.options = mount.options }
    }

    static func info(_ record: SnapshotRecord) -> Containerd_Services_Snapshots_V1_Info {
        .with {
            $0.name = record.key
            $0.parent = record.parent
            $0.kind = switch record.kind {
            case .view: .view
            case .active: .active
            case .committed: .committed
            }
            $0.createdAt = Google_Protobuf_Timestamp(date: record.created)
            $0.updatedAt = Google_Protobuf_Timestamp(date: record.updated)
            $0.labels = record.labels
        }
    }
}
