public import FerrySystem

/// A kernel backend whose kernel-interface descriptors must outlive one ferryd process, so that
/// a restart or upgrade never unmounts anything.
///
/// The contract, for every backend:
/// - `descriptorsToKeep` lists the descriptors by a stable name. ferryd hands each to the
///   service manager's descriptor store (`FDSTORE=1`, `FDNAME=<name>`) right after start, or,
///   without systemd, to whatever keeps it between processes (the fanotify group holder).
/// - At start, ferryd takes descriptors passed back (`LISTEN_FDS` + `LISTEN_FDNAMES`, see
///   `SystemdListenDescriptors.take()`) and gives the backend the ones with its names when it is
///   built (`DaemonAssembly`), instead of opening new ones.
///
/// Names in use: `fanotify-group` (the pre-content group fd), `cachefiles` (`/dev/cachefiles`
/// after `bind`). A name never changes meaning between releases: an upgraded ferryd receives
/// what the previous release stored.
public protocol HandsOverDescriptors: KernelBackend {
    /// The descriptors a successor must inherit, each with its stable name.
    var descriptorsToKeep: [(name: String, fd: FileDescriptor)] { get }
}

/// The stable names of handed-over descriptors.
public enum HandedOverDescriptor {
    /// The fanotify pre-content group fd (`FanotifyBackend`).
    public static let fanotifyGroup = "fanotify-group"
    /// The bound `/dev/cachefiles` fd (the fscache backend).
    public static let cachefiles = "cachefiles"
}

/// A backend that can tell whether its event loop is alive, for the service watchdog: ferryd
/// sends `WATCHDOG=1` only while this returns nil, so a stuck loop gets the daemon restarted.
public protocol ReportsHealth: Sendable {
    /// Nil when serving normally; otherwise what is wrong ("event loop stuck for 3 s").
    func healthProblem() -> String?
}

/// One blob's cache on disk as a backend keeps it (a fanotify cache file, a cachefiles data file).
public struct CachedBlob: Sendable, Equatable {
    /// The blob's digest, hex.
    public var blob: String
    /// Bytes allocated on disk.
    public var bytes: UInt64
    /// When the kernel last read through it (seconds since 1970), for LRU eviction.
    public var lastUse: Double

    public init(blob: String, bytes: UInt64, lastUse: Double) {
        self.blob = blob
        self.bytes = bytes
        self.lastUse = lastUse
    }
}

/// A backend whose per-blob caches can be evicted while no mounted image uses the blob.
public protocol EvictsCachedBlobs: Sendable {
    /// Every blob cache on disk, attached or left over from earlier runs.
    func cachedBlobs() -> [CachedBlob]
    /// Drops the cache of `blob` (the daemon guarantees no mounted image uses it and no mount is
    /// under way); a later attach starts it again empty. Returns the bytes freed.
    func evictCachedBlob(_ blob: String) -> UInt64
}
