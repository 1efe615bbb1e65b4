import FerrySystem
import Foundation
import Testing

/// Compares two directory trees object by object: type, permission bits, owner, size, mtime
/// (seconds and nanoseconds), device numbers, symlink targets, extended attributes, every byte
/// of every regular file, and which paths are hard links of one another.
enum TreeDiff {
    struct Options {
        /// Compare the mtime of the root directory itself (an image has no entry for it).
        var compareRootMtime = false
        /// xattr names to ignore on both sides (e.g. security.selinux added by a host).
        var ignoredXattrs: Set<[UInt8]> = []
        /// Compare the root directory's mode, owner and xattrs (containerd ignores a layer's
        /// `./` entry, umoci applies it).
        var compareRootMetadata = true
        /// xattrs whose names start with one of these are taken out of the expected tree only,
        /// so the actual tree must not have them (containerd never sets `trusted.*`).
        var droppedExpectedXattrPrefixes: [[UInt8]] = []
        /// Expected mtimes before 1970 or after 2^63-1 ns count as the epoch (containerd's
        /// `boundTime`; umoci keeps them).
        var boundExpectedMtimes = false
        /// Expected directory mtimes (seconds) in this range are the unpacker's own stamps, not
        /// the image's, and are not compared.
        var unpackTime: ClosedRange<Int64>? = nil
        /// An expected directory may have xattrs the actual one lacks (containerd's naive
        /// applier keeps a lower directory's xattrs that a new entry for it does not name); the
        /// ones the actual directory has must be there with equal values.
        var expectedDirectoryXattrsMayExceed = false
    }

    /// Returns the differences (empty when the trees are identical), at most `limit` of them.
    static func differences(expected: String, actual: String, options: Options = Options(), limit: Int = 50) throws -> [String] {
        var problems: [String] = []
        var expectedLinks: [UInt64: [[UInt8]]] = [:]
        var actualLinks: [UInt64: [[UInt8]]] = [:]
        var count = 0
        try walk(Array(expected.utf8), Array(actual.utf8), relative: [], options: options, problems: &problems,
                 expectedLinks: &expectedLinks, actualLinks: &actualLinks, count: &count, limit: limit)
        // Hard-link grouping: the sets of paths sharing an inode must be the same on both sides.
        let groups = { (links: [UInt64: [[UInt8]]]) in Set(links.values.filter { $0.count > 1 }.map { Set($0.map(RawPath.display)) }) }
        let e = groups(expectedLinks), a = groups(actualLinks)
        for g in e.subtracting(a) { problems.append("hard-link group \(g.sorted()) missing in actual") }
        for g in a.subtracting(e) { problems.append("unexpected hard-link group \(g.sorted()) in actual") }
        if count < 2 { problems.append("compared only \(count) objects: is the tree empty?") }
        return Array(problems.prefix(limit))
    }

    private static func walk(_ expectedRoot: [UInt8], _ actualRoot: [UInt8], relative: [UInt8], options: Options,
                             problems: inout [String], expectedLinks: inout [UInt64: [[UInt8]]],
                             actualLinks: inout [UInt64: [[UInt8]]], count: inout Int, limit: Int) throws {
        guard problems.count < limit else { return }
        let ePath = expectedRoot + relative, aPath = actualRoot + relative
        let name = relative.isEmpty ? "/" : RawPath.display(relative)
        count += 1
        let e = try RawPath.status(ePath)
        let a: FileStatus
        do { a = try RawPath.status(aPath) } catch {
            problems.append("\(name): missing in actual (\(error))")
            return
        }
        func differ(_ what: String, _ x: some Equatable & CustomStringConvertible, _ y: some Equatable & CustomStringConvertible) {
            problems.append("\(name): \(what) expected \(x), got \(y)")
        }
        let metadata = !relative.isEmpty || options.compareRootMetadata
        // A different type ends the comparison here; different permissions do not.
        if e.type != a.type || (metadata && e.mode != a.mode) { differ("mode", String(e.mode, radix: 8), String(a.mode, radix: 8)) }
        if e.type != a.type { return }
        if metadata && e.uid != a.uid { differ("uid", e.uid, a.uid) }
        if metadata && e.gid != a.gid { differ("gid", e.gid, a.gid) }
        var (eSeconds, eNanoseconds) = (e.mtimeSeconds, e.mtimeNanoseconds)
        if options.boundExpectedMtimes, eSeconds < 0 || eSeconds > Int64.max / 1_000_000_000
            || (eSeconds == Int64.max / 1_000_000_000 && Int64(eNanoseconds) > Int64.max % 1_000_000_000) {
            (eSeconds, eNanoseconds) = (0, 0)
        }
        let stamped = e.isDirectory && options.unpackTime?.contains(eSeconds) == true
        if (!relative.isEmpty || options.compareRootMtime) && !stamped {
            if eSeconds != a.mtimeSeconds || eNanoseconds != a.mtimeNanoseconds {
                differ("mtime", "\(eSeconds).\(eNanoseconds)", "\(a.mtimeSeconds).\(a.mtimeNanoseconds)")
            }
        }
        let dropped = { (name: [UInt8]) in options.droppedExpectedXattrPrefixes.contains { name.starts(with: $0) } }
        let ex = try RawPath.extendedAttributes(ePath).filter { !options.ignoredXattrs.contains($0.key) && !dropped($0.key) }
        let ax = try RawPath.extendedAttributes(aPath).filter { !options.ignoredXattrs.contains($0.key) }
        let exceedingAllowed = e.isDirectory && options.expectedDirectoryXattrsMayExceed && ax.allSatisfy { ex[$0.key] == $0.value }
        if metadata && ex != ax && !exceedingAllowed {
            let show = { (x: [[UInt8]: [UInt8]]) in x.map { "\(RawPath.display($0.key))=\($0.value.count)B" }.sorted().joined(separator: ",") }
            differ("xattrs", show(ex), show(ax))
        }
        if e.isDirectory {
            let en = try RawPath.list(ePath), an = try RawPath.list(aPath)
            if en != an {
                let es = Set(en), as_ = Set(an)
                for n in es.subtracting(as_).prefix(5) { problems.append("\(name)/\(RawPath.display(n)): missing in actual") }
                for n in as_.subtracting(es).prefix(5) { problems.append("\(name)/\(RawPath.display(n)): unexpected in actual") }
            }
            for child in en where an.contains(child) {
                try walk(expectedRoot, actualRoot, relative: relative + [0x2f] + child, options: options, problems: &problems,
                         expectedLinks: &expectedLinks, actualLinks: &actualLinks, count: &count, limit: limit)
            }
            return
        }
        expectedLinks[e.inode, default: []].append(relative)
        actualLinks[a.inode, default: []].append(relative)
        if e.isSymlink {
            let et = try RawPath.linkTarget(ePath), at = try RawPath.linkTarget(aPath)
            if et != at { differ("symlink target", RawPath.display(et), RawPath.display(at)) }
        } else if e.isRegular {
            if e.size != a.size { differ("size", e.size, a.size); return }
            let eb = try RawPath.contents(ePath), ab = try RawPath.contents(aPath)
            if eb != ab {
                let first = zip(eb, ab).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset ?? min(eb.count, ab.count)
                problems.append("\(name): contents differ (first difference at byte \(first))")
            }
        } else if e.type == 0o020000 || e.type == 0o060000 {
            if e.rdevMajor != a.rdevMajor || e.rdevMinor != a.rdevMinor {
                differ("device", "\(e.rdevMajor):\(e.rdevMinor)", "\(a.rdevMajor):\(a.rdevMinor)")
            }
        }
    }
}
