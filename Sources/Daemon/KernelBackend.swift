public import Blob

/// How the kernel is told to mount an image once its backend has attached it.
public enum MountPlan: Sendable, Equatable {
    /// File-backed EROFS (Linux ≥ 6.12 with fanotify pre-content hooks for laziness):
    /// `mount(bootstrap, target, "erofs", MS_RDONLY, "device=<cache file>,…")`.
    case fileBacked(bootstrap: String, devices: [String])
    /// EROFS over fscache on demand: `mount("none", target, "erofs", MS_RDONLY, "fsid=…[,domain_id=…]")`.
    case fscache(fsid: String, domainID: String?)
}

/// What a mount asks of a backend.
public struct MountRequest: Sendable, Equatable, Codable {
    /// Where the image is (or was) mounted, canonical.
    public var mountpoint: String
    /// fscache only: mounts in one domain share blob cookies (and so their cached data); nil: none.
    public var domainID: String?
    public init(mountpoint: String, domainID: String? = nil) {
        self.mountpoint = mountpoint
        self.domainID = domainID
    }
}

/// A front end that lets the kernel read an image's blobs through `BlobFiller.fill`.
/// Backends: `fanotify` (pre-content hooks on sparse cache files) and `fscache` (cachefiles on demand).
public protocol KernelBackend: AnyObject, Sendable {
    /// "fanotify" or "fscache".
    var name: String { get }
    /// Makes the image's blobs servable for a mount at `mount.mountpoint` and returns how to mount it.
    func attach(_ image: RegisteredImage, mount: MountRequest) throws -> MountPlan
    /// The mount is gone: forget what only it needed (blob data already cached stays).
    func detach(_ image: RegisteredImage, mount: MountRequest)
    /// Serves kernel requests until `stop()`; runs on its own thread.
    func run() throws
    /// Stops serving (pending requests are answered first).
    func stop()
    /// Called before a restarted daemon re-attaches the images it served: requests for blobs not
    /// attached yet are held instead of failed.
    func beginRestore()
    /// Re-attaching is done: held requests are served (or failed if still unknown).
    func endRestore()
}

/// A backend whose kernel state can be lost between two ferryds: the fanotify group dies with its
/// last holder, and with it the marks that guard the cache files' unfilled ranges. Until the next
/// ferryd marks them again, reads of those ranges get the holes' zeros, and the mounts' page
/// cache keeps them.
public protocol DetectsLostKernelState: KernelBackend {
    /// True when this backend started with new kernel state although mounts of a previous
    /// ferryd may still exist (it found no group or device to take over).
    var startedAfresh: Bool { get }
    /// What lost kernel state does to a previous ferryd's mounts.
    var lostKernelState: LostKernelState { get }
}

/// What a previous ferryd's mounts went through when its kernel state ended with it.
public enum LostKernelState: Sendable {
    /// fanotify: the marks vanished, so reads of unfetched ranges got zeros; attaching marks again
    /// guards the mount from now on.
    case readsWereUnguarded
    /// fscache: the cache was withdrawn with the last `/dev/cachefiles` descriptor; the mount's
    /// superblock keeps the dead cache and fails every read with EIO until it is mounted again.
    case mountsAreDead
}

/// One image the daemon serves: its bootstrap, chunk tables and the sources of its blobs.
public final class RegisteredImage: Sendable {
    /// A stable id: the hex digest of the converted image's manifest.
    public let id: String
    /// What the user asked to mount (e.g. `docker://…` or `oci:…`).
    public let reference: String
    /// Local path of the bootstrap's EROFS part.
    public let bootstrapPath: String
    public let metadata: BootstrapMetadata
    /// `BlobInfo.cacheKey` of each of `metadata.blobs`, in their order: hashed once here, not on
    /// every attach, status and eviction pass.
    public let blobCacheKeys: [String]
    /// Where the compressed blobs can be read, in order of preference.
    public let sources: [any ChunkSource]
    public let stats: FillStatistics
    /// Hex digest of the bootstrap layer the image was registered from (nil when unknown).
    public let bootstrapDigest: String?
    /// The chunks the kernel read first, in order, from the image's registration (its first mount) on.
    /// With fanotify, a blob cache file shared with an image mounted earlier records into that
    /// image's trace, as its fill statistics do.
    public let trace: AccessTrace

    public init(id: String, reference: String, bootstrapPath: String, metadata: BootstrapMetadata,
                sources: [any ChunkSource], stats: FillStatistics = FillStatistics(), bootstrapDigest: String? = nil) {
        self.id = id
        self.bootstrapDigest = bootstrapDigest
        self.reference = reference
        self.bootstrapPath = bootstrapPath
        self.metadata = metadata
        self.blobCacheKeys = metadata.blobs.map(\.cacheKey)
        self.sources = sources
        self.stats = stats
        self.trace = AccessTrace(chunkCounts: metadata.blobs.map(\.chunks.count))
    }

    /// Where a backend records kernel requests for `blob` (found by digest; nil if not the image's).
    public func accessTrace(of blob: BlobInfo) -> BlobAccessTrace? {
        metadata.blobs.firstIndex { $0.digest == blob.digest }.map { trace.blob($0) }
    }
}
