internal import CFerry

extension FileDescriptor {
    /// The byte ranges of the file that hold data (not holes), found with `lseek(SEEK_DATA)` and
    /// `lseek(SEEK_HOLE)`. Used to learn which chunks a cache file already has after a restart.
    public func dataRanges() throws -> [Range<UInt64>] {
        let size = try self.size()
        var ranges: [Range<UInt64>] = []
        var position: off_t = 0
        while UInt64(position) < size {
            let start = lseek(rawValue, position, SEEK_DATA)
            if start < 0 {
                if cferry_errno() == ENXIO { break }  // no data after position
                throw SystemError.syscall("lseek(SEEK_DATA) \(name)", errno: cferry_errno())
            }
            let end = lseek(rawValue, start, SEEK_HOLE)
            if end < 0 { throw SystemError.syscall("lseek(SEEK_HOLE) \(name)", errno: cferry_errno()) }
            ranges.append(UInt64(start) ..< UInt64(end))
            position = end
        }
        return ranges
    }

    /// Deallocates `range` so it reads as zeros and counts as a hole again
    /// (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`).
    public func punchHole(_ range: Range<UInt64>) throws {
        _ = try retrying("fallocate(PUNCH_HOLE) \(name)") {
            cferry_fallocate(rawValue, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(range.lowerBound), off_t(range.count))
        }
    }

    /// The (device, inode) pair that identifies the open file.
    public func identity() throws -> FileIdentity {
        var st = stat()
        _ = try retrying("fstat \(name)") { fstat(rawValue, &st) }
        return FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Bytes allocated on disk for the file (`st_blocks * 512`), which is what `du` reports.
    public func allocatedBytes() throws -> UInt64 {
        var st = stat()
        _ = try retrying("fstat \(name)") { fstat(rawValue, &st) }
        return UInt64(st.st_blocks) * 512
    }

    /// Duplicates the descriptor (`fcntl(F_DUPFD_CLOEXEC)`).
    public func duplicate() throws -> FileDescriptor {
        let fd = try retrying("dup \(name)") { cferry_fcntl_int(rawValue, F_DUPFD_CLOEXEC, 0) }
        return FileDescriptor(rawValue: fd, name: name)
    }
}

/// Which file an open descriptor refers to.
public struct FileIdentity: Sendable, Hashable {
    public var device: UInt64
    public var inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }
}
