public import FerrySystem
public import Logging

/// Mounts and unmounts; injected so tests and backends agree on how (mount(2) by default).
public protocol Mounter: Sendable {
    /// Mounts `plan` at `target`; `readaheadKiB` overrides the mounter's kernel readahead for
    /// this mount (nil: its default).
    func mount(_ plan: MountPlan, at target: String, readaheadKiB: Int?) throws
    func unmount(_ target: String) throws
}

/// mount(2) / umount2(2) for both kinds of plan, then the mount's kernel readahead.
public struct KernelMounter: Mounter {
    /// `read_ahead_kb` for each new mount's bdi (nil: the kernel's default, 128).
    public var readaheadKiB: Int?
    /// Flags on every mount besides `MS_RDONLY`: `MS_NOSUID | MS_NODEV` unless the operator allows
    /// setuid binaries and device nodes of images to take effect on the host.
    public var flags: Mount.Flags
    private let logger: Logger?

    public init(readaheadKiB: Int? = nil, allowSUIDAndDevices: Bool = false, logger: Logger? = nil) {
        self.readaheadKiB = readaheadKiB
        self.flags = allowSUIDAndDevices ? [] : [.noSUID, .noDev]
        self.logger = logger
    }

    /// Callers serialize mounts (FerryDaemon's mount queue): the new mount's bdi is the one
    /// `erofs-N` entry that appears across the mount(2) call.
    public func mount(_ plan: MountPlan, at target: String, readaheadKiB override: Int? = nil) throws {
        let readaheadKiB = override ?? self.readaheadKiB
        let before = readaheadKiB == nil ? [] : Mount.ReadaheadControl.erofsBDINames()
        // The directory is opened without following symbolic links and mounted on through its
        // descriptor: a symlink swapped into the path cannot send the mount elsewhere.
        let directory = try Mount.openMountpoint(target)
        defer { try? directory.close() }
        let at = Mount.procPath(of: directory)
        switch plan {
        case let .fileBacked(bootstrap, devices): try Mount.erofs(file: bootstrap, devices: devices, at: at, flags: flags)
        case let .fscache(fsid, domainID): try Mount.erofsOnDemand(fsid: fsid, domainID: domainID, at: at, flags: flags)
        }
        guard let readaheadKiB else { return }
        let added = Mount.ReadaheadControl.erofsBDINames().subtracting(before)
        guard added.count == 1, let bdi = added.first else {
            // Another EROFS mount made at the same moment outside ferryd: which bdi is ours is unknown.
            logger?.warning("kernel readahead left at the default", metadata: ["at": "\(target)", "new EROFS bdis": "\(added.sorted())"])
            return
        }
        do {
            try Mount.ReadaheadControl.setReadahead(kib: readaheadKiB, bdi: bdi)
        } catch {
            logger?.warning("cannot set kernel readahead", metadata: ["at": "\(target)", "bdi": "\(bdi)", "error": "\(error)"])
        }
    }
    /// Unmounts the mount at `target`, reached without following symbolic links.
    public func unmount(_ target: String) throws {
        try Mount.unmountWithoutFollowing(target)
    }
}
