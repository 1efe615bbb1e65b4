public import Daemon
import FerrySystem
import Foundation
public import Logging
public import OCI

/// Mounts and unmounts Ferry images lazily for the snapshotter (ferryd's own mount path).
public protocol LazyImageMounts: Sendable {
    /// Mounts the Ferry image `reference` at `mountpoint` (an empty directory); returns the hex
    /// digest of the bootstrap layer it mounted.
    func mountImage(_ reference: String, at mountpoint: String) async throws -> String?
    /// Unmounts a mount made by `mountImage`.
    func unmountImage(at mountpoint: String) async throws
    /// Whether ferryd has a mount at `mountpoint`.
    func hasMount(at mountpoint: String) -> Bool
}

/// A snapshotter error with the gRPC status containerd maps back to its own errors
/// (`errdefs.ErrNotFound`, `ErrAlreadyExists`, `ErrFailedPrecondition`, `ErrInvalidArgument`).
public struct SnapshotError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case notFound, alreadyExists, failedPrecondition, invalidArgument, unavailable, internalError }
    public var kind: Kind
    public var message: String
    public var description: String { message }

    static func notFound(_ m: String) -> SnapshotError { SnapshotError(kind: .notFound, message: m) }
    static func alreadyExists(_ m: String) -> SnapshotError { SnapshotError(kind: .alreadyExists, message: m) }
    static func failedPrecondition(_ m: String) -> SnapshotError { SnapshotError(kind: .failedPrecondition, message: m) }
    static func invalidArgument(_ m: String) -> SnapshotError { SnapshotError(kind: .invalidArgument, message: m) }
}

/// One mount as containerd's `mount.Mount` describes it.
public struct SnapshotMount: Sendable, Equatable {
    public var type: String
    public var source: String
    public var options: [String]
}

/// The labels containerd sets on the snapshots it prepares for an image's layers.
public enum SnapshotLabel {
    /// The chain id the layer's committed snapshot will have (set by containerd's unpacker).
    public static let targetReference = "containerd.io/snapshot.ref"
    /// Set by the CRI plugin when `disable_snapshot_annotations = false`.
    public static let imageReference = "containerd.io/snapshot/cri.image-ref"
    public static let manifestDigest = "containerd.io/snapshot/cri.manifest-digest"
    public static let layerDigest = "containerd.io/snapshot/cri.layer-digest"
}

/// containerd's snapshotter semantics, as its own overlayfs snapshotter has them, plus Ferry
/// layers as remote snapshots.
///
/// - An ordinary layer: Prepare makes an active snapshot (an upper directory containerd unpacks
///   into), Commit turns it into the committed snapshot of the layer's chain id, and containers
///   get overlay mounts with the committed chain as lowerdirs.
/// - A Ferry layer (annotation `containerd.io/snapshot/ferry.layer`): Prepare records the
///   committed snapshot under the chain id at once and answers ALREADY_EXISTS, so containerd
///   downloads and unpacks nothing. The bootstrap layer's snapshot is the image's lazy mount
///   (made through ferryd before Prepare returns, keyed by bootstrap digest, shared by every
///   image with that bootstrap); snapshots above it use that mount as their lowerdir, and the
///   blob layers below it contribute nothing.
public final class Snapshotter: Sendable {
    public let root: String
    let store: SnapshotStore
    private let lazy: any LazyImageMounts
    private let logger: Logger
    /// One lazy mount per bootstrap however many Prepare calls ask for it at once.
    private let lazyMounts = SingleFlight<String, Bool>()

    /// - Parameter root: the snapshotter's directory (`snapshots/<id>/{fs,work}`, `lazy/<bootstrap>`, `metadata.db`).
    public init(root: String, lazy: any LazyImageMounts, logger: Logger) throws {
        self.root = root
        self.lazy = lazy
        self.logger = logger
        for dir in [root, root + "/snapshots", root + "/lazy"] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        store = try SnapshotStore(path: root + "/metadata.db")
    }

    func directory(_ record: SnapshotRecord) -> String { "\(root)/snapshots/\(record.id)" }
    func lazyMountpoint(_ bootstrapHex: String) -> String { "\(root)/lazy/\(bootstrapHex)" }

    // MARK: Prepare, View

    /// An active snapshot on top of `parent` (or, for a Ferry layer, its committed remote
    /// snapshot, reported as ALREADY_EXISTS).
    public func prepare(key: String, parent: String, labels: [String: String]) async throws -> [SnapshotMount] {
        if let layer = labels[FerryAnnotation.snapshotLayer], let target = labels[SnapshotLabel.targetReference] {
            try await prepareFerryLayer(layer, target: target, parent: parent, labels: labels)
        }
        return try await create(key: key, parent: parent, kind: .active, labels: labels)
    }

    /// A read-only view of `parent`.
    public func view(key: String, parent: String, labels: [String: String]) async throws -> [SnapshotMount] {
        try await create(key: key, parent: parent, kind: .view, labels: labels)
    }

    private func create(key: String, parent: String, kind: SnapshotKind, labels: [String: String]) async throws -> [SnapshotMount] {
        guard !key.isEmpty else { throw SnapshotError.invalidArgument("snapshot key is empty") }
        let root = self.root
        let record = try await store.write { tx -> SnapshotRecord in
            if try tx.record(key) != nil { throw SnapshotError.alreadyExists("snapshot \(key) already exists") }
            if !parent.isEmpty {
                guard let p = try tx.record(parent) else { throw SnapshotError.notFound("parent snapshot \(parent) does not exist") }
                guard p.kind == .committed else {
                    throw SnapshotError.failedPrecondition("parent \(parent) is \(p.kind), not committed")
                }
            }
            let record = try tx.insert(key: key, parent: parent, kind: kind, labels: labels)
            // Directories inside the transaction: a failure leaves no record without them.
            let dir = "\(root)/snapshots/\(record.id)"
            try? FileManager.default.removeItem(atPath: dir)
            for sub in [dir, dir + "/fs", dir + "/work"] {
                try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
            }
            return record
        }
        return try await mounts(for: record)
    }

    /// Records a Ferry layer's committed snapshot under `target` (mounting the image lazily for
    /// its bootstrap layer) and throws ALREADY_EXISTS, which tells containerd's unpacker to skip
    /// the layer.
    private func prepareFerryLayer(_ layer: String, target: String, parent: String, labels: [String: String]) async throws {
        if let existing = try await store.record(target) {
            throw SnapshotError.alreadyExists("snapshot \(target) already exists (\(existing.kind))")
        }
        var lazyImage: String?, lazyReference: String?
        switch layer {
        case "blob":
            break
        case "bootstrap":
            let (reference, bootstrap) = try Self.lazyReference(labels)
            let mountpoint = lazyMountpoint(bootstrap)
            try await ensureLazyMount(reference, at: mountpoint, layer: bootstrap)
            lazyImage = bootstrap
            lazyReference = reference
        default:
            throw SnapshotError.invalidArgument("layer annotation \(FerryAnnotation.snapshotLayer)=\"\(layer)\" is neither blob nor bootstrap")
        }
        let (image, reference) = (lazyImage, lazyReference)
        let created = try await store.write { tx -> Bool in
            if try tx.record(target) != nil { return false }
            if !parent.isEmpty, try tx.record(parent) == nil {
                throw SnapshotError.notFound("parent snapshot \(parent) does not exist")
            }
            try tx.insert(key: target, parent: parent, kind: .committed, labels: labels, remote: true,
                          lazyImage: image, lazyReference: reference)
            return true
        }
        if created {
            logger.info("Ferry layer prepared remotely", metadata: ["chain": "\(target)", "layer": "\(layer)",
                                                                    "image": "\(lazyReference ?? "-")"])
        }
        throw SnapshotError.alreadyExists("target snapshot \(target) is a Ferry layer, served lazily")
    }

    /// `docker://repository@manifest-digest` and the bootstrap's hex digest, from the CRI labels.
    static func lazyReference(_ labels: [String: String]) throws -> (reference: String, bootstrapHex: String) {
        guard let image = labels[SnapshotLabel.imageReference], let manifest = labels[SnapshotLabel.manifestDigest],
              let layer = labels[SnapshotLabel.layerDigest] else {
            throw SnapshotError.failedPrecondition(
                "Ferry bootstrap layer without the CRI labels \(SnapshotLabel.imageReference), \(SnapshotLabel.manifestDigest) and "
                + "\(SnapshotLabel.layerDigest): pull Ferry images through CRI with disable_snapshot_annotations = false")
        }
        guard let manifestDigest = try? Digest(parsing: manifest), let layerDigest = try? Digest(parsing: layer) else {
            throw SnapshotError.invalidArgument("malformed digest in \(SnapshotLabel.manifestDigest)=\(manifest) or \(SnapshotLabel.layerDigest)=\(layer)")
        }
        // The repository without tag or digest: "host/repo:tag" → "host/repo".
        var repository = Substring(image)
        if let at = repository.firstIndex(of: "@") { repository = repository[..<at] }
        if let colon = repository.lastIndex(of: ":"), !repository[colon...].contains("/") { repository = repository[..<colon] }
        guard !repository.isEmpty else { throw SnapshotError.invalidArgument("image reference \"\(image)\" names no repository") }
        return ("docker://\(repository)@\(manifestDigest)", layerDigest.hex)
    }

    /// Makes sure the lazy mount of a bootstrap exists (once, however many callers ask at once).
    func ensureLazyMount(_ reference: String, at mountpoint: String, layer: String) async throws {
        let lazy = self.lazy
        _ = try await lazyMounts.value(for: mountpoint) {
            if lazy.hasMount(at: mountpoint) { return true }
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            let mounted: String?
            do {
                mounted = try await lazy.mountImage(reference, at: mountpoint)
            } catch {
                rmdir(mountpoint)
                throw SnapshotError(kind: .failedPrecondition,
                                    message: "Ferry bootstrap layer sha256:\(layer) of \(reference): cannot mount it lazily: \(error)")
            }
            // The layer containerd asked for must be the bootstrap the manifest names.
            if mounted != layer {
                try? await lazy.unmountImage(at: mountpoint)
                rmdir(mountpoint)
                throw SnapshotError(kind: .failedPrecondition,
                                    message: "Ferry bootstrap layer sha256:\(layer): \(reference) has bootstrap sha256:\(mounted ?? "?") instead")
            }
            return true
        }
    }

    // MARK: Mounts

    /// The mounts of an active or view snapshot.
    public func mounts(key: String) async throws -> [SnapshotMount] {
        guard let record = try await store.record(key) else { throw SnapshotError.notFound("snapshot \(key) does not exist") }
        guard record.kind != .committed else { throw SnapshotError.failedPrecondition("snapshot \(key) is committed: it has no mounts") }
        return try await mounts(for: record)
    }

    /// containerd's overlay snapshotter's mounts: a bind mount of the snapshot's own directory
    /// when it has no parent content, an overlay with the parent chain as lowerdirs otherwise; a
    /// view is read-only. A Ferry bootstrap in the chain stands for everything below it (its lazy
    /// mount holds the whole image), and is mounted again first if it is gone (after a reboot).
    func mounts(for record: SnapshotRecord) async throws -> [SnapshotMount] {
        var lowers: [String] = []
        for ancestor in try await store.chain(from: record.parent) {
            if let image = ancestor.lazyImage {
                let mountpoint = lazyMountpoint(image)
                if let reference = ancestor.lazyReference { try await ensureLazyMount(reference, at: mountpoint, layer: image) }
                lowers.append(mountpoint)
                break
            }
            if ancestor.remote { continue }
            lowers.append(directory(ancestor) + "/fs")
        }
        let dir = directory(record)
        if record.kind == .view {
            switch lowers.count {
            case 0: return [SnapshotMount(type: "bind", source: dir + "/fs", options: ["ro", "rbind"])]
            case 1: return [SnapshotMount(type: "bind", source: lowers[0], options: ["ro", "rbind"])]
            default: return [SnapshotMount(type: "overlay", source: "overlay", options: ["lowerdir=" + lowers.joined(separator: ":")])]
            }
        }
        if lowers.isEmpty { return [SnapshotMount(type: "bind", source: dir + "/fs", options: ["rw", "rbind"])] }
        return [SnapshotMount(type: "overlay", source: "overlay",
                              options: ["workdir=\(dir)/work", "upperdir=\(dir)/fs", "lowerdir=" + lowers.joined(separator: ":")])]
    }

    // MARK: Commit, Remove

    /// Commits the active snapshot `key` as `name`.
    public func commit(name: String, key: String, labels: [String: String]) async throws {
        guard let record = try await store.record(key) else { throw SnapshotError.notFound("snapshot \(key) does not exist") }
        guard record.kind == .active else { throw SnapshotError.failedPrecondition("snapshot \(key) is \(record.kind), not active") }
        let usage = try await DedicatedThread.run { [dir = directory(record)] in DiskUsage.measure(dir + "/fs") }
        try await store.write { tx in
            guard let current = try tx.record(key), current.kind == .active else {
                throw SnapshotError.failedPrecondition("snapshot \(key) is no longer active")
            }
            if try tx.record(name) != nil { throw SnapshotError.alreadyExists("snapshot \(name) already exists") }
            try tx.commit(key: key, as: name, labels: labels.isEmpty ? current.labels : labels, size: usage.bytes, inodes: usage.inodes)
        }
    }

    /// Removes a snapshot that has no children; the last snapshot of a lazy image unmounts it.
    public func remove(key: String) async throws {
        let (record, lastUser) = try await store.write { tx -> (SnapshotRecord, Bool) in
            guard let record = try tx.record(key) else { throw SnapshotError.notFound("snapshot \(key) does not exist") }
            let children = try tx.children(of: key)
            if children > 0 { throw SnapshotError.failedPrecondition("snapshot \(key) has \(children) child snapshot(s)") }
            try tx.delete(key)
            let lastUser = try record.lazyImage.map { try tx.users(ofLazyImage: $0) == 0 } ?? false
            return (record, lastUser)
        }
        let dir = directory(record)
        _ = try? await DedicatedThread.run { try FileManager.default.removeItem(atPath: dir) }
        if lastUser, let image = record.lazyImage {
            let mountpoint = lazyMountpoint(image)
            if lazy.hasMount(at: mountpoint) {
                do {
                    try await lazy.unmountImage(at: mountpoint)
                    rmdir(mountpoint)
                    logger.info("lazy mount removed with its last snapshot", metadata: ["bootstrap": "\(image.prefix(12))"])
                } catch {
                    logger.error("cannot unmount the lazy mount of a removed snapshot", metadata: ["at": "\(mountpoint)", "error": "\(error)"])
                }
            }
        }
    }

    // MARK: Stat, Update, List, Usage, Cleanup

    public func stat(key: String) async throws -> SnapshotRecord {
        guard let record = try await store.record(key) else { throw SnapshotError.notFound("snapshot \(key) does not exist") }
        return record
    }

    /// Sets labels: all of them (no paths, or `labels`), or the ones `labels.KEY` paths name
    /// (a key missing from `labels` is removed).
    public func update(key: String, labels: [String: String], paths: [String]) async throws -> SnapshotRecord {
        for path in paths where path != "labels" && !path.hasPrefix("labels.") {
            throw SnapshotError.invalidArgument("cannot update \(path) of snapshot \(key): only labels change")
        }
        return try await store.write { tx -> SnapshotRecord in
            guard var record = try tx.record(key) else { throw SnapshotError.notFound("snapshot \(key) does not exist") }
            if paths.isEmpty || paths.contains("labels") {
                record.labels = labels
            } else {
                for path in paths {
                    let name = String(path.dropFirst("labels.".count))
                    record.labels[name] = labels[name]
                }
            }
            try tx.setLabels(key, record.labels)
            record.updated = Date()
            return record
        }
    }

    /// Every snapshot matching any of `filters` (containerd's filter syntax; none: every snapshot).
    public func list(filters: [String]) async throws -> [SnapshotRecord] {
        let parsed = try filters.filter { !$0.isEmpty }.map(SnapshotFilter.init(parsing:))
        let all = try await store.all()
        guard !parsed.isEmpty else { return all }
        return all.filter { record in parsed.contains { $0.matches(record) } }
    }

    /// Bytes and inodes a snapshot uses of its own (an active one measured now).
    public func usage(key: String) async throws -> (bytes: Int64, inodes: Int64) {
        let record = try await stat(key: key)
        if record.kind == .committed { return (record.size, record.inodes) }
        let usage = try await DedicatedThread.run { [dir = directory(record)] in DiskUsage.measure(dir + "/fs") }
        return (usage.bytes, usage.inodes)
    }

    /// Removes directories no snapshot owns (left by a crash between a transaction and its files).
    public func cleanup() async throws {
        let owned = Set(try await store.all().map { String($0.id) })
        let root = self.root
        try await DedicatedThread.run {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: root + "/snapshots")) ?? [] where !owned.contains(entry) {
                try? FileManager.default.removeItem(atPath: root + "/snapshots/" + entry)
            }
        }
    }
}

/// Bytes and inodes below a directory (`du`-like, not following symlinks, each inode once).
enum DiskUsage {
    static func measure(_ path: String) -> (bytes: Int64, inodes: Int64) {
        var bytes: Int64 = 0, inodes: Int64 = 0
        var seen = Set<UInt64>()
        let manager = FileManager.default
        guard let walker = manager.enumerator(atPath: path) else { return (0, 0) }
        while let relative = walker.nextObject() as? String {
            guard let attributes = try? manager.attributesOfItem(atPath: path + "/" + relative) else { continue }
            let inode = (attributes[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0
            guard seen.insert(inode).inserted else { continue }
            inodes += 1
            bytes += (attributes[.size] as? NSNumber)?.int64Value ?? 0
        }
        return (bytes, inodes)
    }
}
