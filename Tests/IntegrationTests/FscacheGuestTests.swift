import FerrySystem
import Foundation
import Testing

/// The guest half of `FscacheVMTests`: runs inside `Tools/vm` (Linux 6.1, `/dev/cachefiles`),
/// only when the host handed it a fixture. Everything runs through `system(3)` — in the guest,
/// Foundation's `Process` hangs (see CachefilesVMTests).
@Suite(.serialized) struct FscacheGuestTests {
    static var fixture: String? { ProcessInfo.processInfo.environment["FERRY_FSCACHE_FIXTURE"] }
    static var enabled: Bool { fixture != nil && FileManager.default.fileExists(atPath: "/dev/cachefiles") }

    /// The guest's scratch: ext4 on a loop file (cachefiles needs xattrs and direct I/O; the
    /// umoci reference needs user.* xattrs, which 6.1's tmpfs lacks).
    static let work = "/run/tmp/fscache-work"
    static let registryHost = "127.0.0.1:5000"
    static var bin: String { ProcessInfo.processInfo.environment["FERRY_BIN"] ?? Build.binDirectory }
    static var ferry: String { bin + "/ferry" }
    static var ferryd: String { bin + "/ferryd" }

    struct Failed: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs a shell command; returns its status and combined output.
    @discardableResult
    static func sh(_ command: String, check: Bool = true) throws -> (status: Int32, output: String) {
        let log = "/run/tmp/sh-\(UUID().uuidString.prefix(8)).out"
        defer { unlink(log) }
        let raw = system("( \(command) ) > \(log) 2>&1")
        let status = raw == -1 ? -1 : (raw >> 8) & 0xff
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        if check && status != 0 { throw Failed(description: "`\(command)` exited \(status): \(output.suffix(3000))") }
        return (status, output)
    }

    static func note(_ line: String) {
        print("fscache-guest: \(line)")
        if let out = ProcessInfo.processInfo.environment["FERRY_VM_OUT"] {
            let path = out + "/fscache-figures.txt"
            if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
            if let handle = FileHandle(forWritingAtPath: path) {
                handle.seekToEndOfFile()
                handle.write(Data((line + "\n").utf8))
                try? handle.close()
            }
        }
    }

    /// A ferryd in the guest.
    struct Daemon {
        let state: String
        let socket: String
        let log: String
        let extra: String

        static func start(_ name: String, extra: String = "") throws -> Daemon {
            // The log goes to the folder the host shares with the guest, so it can be read during
            // and after a run (a guest that hangs shows nothing else).
            let logs = ProcessInfo.processInfo.environment["FERRY_VM_OUT"] ?? work
            let d = Daemon(state: "\(work)/\(name)-state", socket: "\(work)/\(name).sock", log: "\(logs)/\(name).log", extra: extra)
            try d.launch()
            return d
        }

        func launch() throws {
            try sh("\(ferryd) --backend fscache --state-dir \(state) --socket \(socket) --plain-http \(registryHost) --containerd-snapshotter-socket \"\" --log-level debug \(extra) >> \(log) 2>&1 &")
            for _ in 0..<300 {
                if (try? sh("\(FscacheGuestTests.ferry) status --socket \(socket)", check: false))?.status == 0 { return }
                usleep(100_000)
            }
            throw Failed(description: "ferryd did not start: \(logText.suffix(3000))")
        }

        var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

        @discardableResult
        func ferry(_ arguments: String) throws -> String {
            try sh("\(FscacheGuestTests.ferry) \(arguments) --socket \(socket)").output
        }

        /// Per-image figures by reference.
        func images() throws -> [String: [String: Any]] {
            let out = try ferry("status --json")
            let list = (try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]) ?? []
            var byReference: [String: [String: Any]] = [:]
            for image in list { if let r = image["reference"] as? String { byReference[r] = image } }
            return byReference
        }

        func fetched(_ reference: String) throws -> Int { try images()[reference]?["bytesFetched"] as? Int ?? -1 }

        func kill() throws {
            try sh("pkill -9 -f '\(ferryd) --backend fscache --state-dir \(state) ' ; sleep 0.5", check: false)
        }
    }

    static func reference(_ tag: String) -> String { "docker://\(registryHost)/rich:\(tag)" }

    /// Distinct compressed and aligned bytes of the chunks of `path` in a converted layout.
    static func chunkBytes(_ path: String, layout: String) throws -> (compressed: Int, uncompressed: Int, blob: String, offsets: [Int]) {
        let out = try sh("\(ferry) inspect oci:\(layout):t --chunks \(path) --json").output
        let (rows, compressed, uncompressed) = try distinctChunkTotals(inspectJSON: out)
        guard let first = rows.first, let blob = first["blob"] as? String else {
            throw Failed(description: "no chunks for \(path): \(out)")
        }
        return (compressed, uncompressed, blob, rows.compactMap { $0["compressedOffset"] as? Int })
    }

    /// GNU tar's --compare of a mount against a reference tree: contents, modes, owners, mtimes,
    /// link targets, device numbers (quicker than TreeDiff under TCG; TreeDiff runs once per image).
    static func tarCompare(expected: String, actual: String) throws -> String {
        let result = try sh("tar --numeric-owner -C \(expected) -cf - . | tar --numeric-owner -C \(actual) -df -", check: false)
        return result.status == 0 ? "" : result.output
    }

    static func mountpoint(_ name: String) throws -> String {
        let path = "\(work)/\(name)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func read(_ path: String) -> (bytes: [UInt8]?, errno: Int32) {
        do {
            let fd = try FileDescriptor.open(path, .readOnly)
            defer { try? fd.close() }
            return (try fd.read(upTo: 64 << 20), 0)
        } catch let SystemError.syscall(_, code) {
            return (nil, code)
        } catch {
            return (nil, -1)
        }
    }

    /// One guest run covers every must-show of the fscache backend, in an order that keeps each
    /// measurement clean (each image's chunks are fetched for the first time where it is measured).
    @Test(.enabled(if: enabled, "runs inside Tools/vm with a fixture from FscacheVMTests"))
    func fscacheBackendEndToEnd() throws {
        let fixture = try #require(Self.fixture)
        try Self.sh("""
            mkdir -p \(Self.work) && truncate -s 600M /run/tmp/fscache.ext4 && mkfs.ext4 -q -F /run/tmp/fscache.ext4 \
            && mount -o loop /run/tmp/fscache.ext4 \(Self.work)
            """)
        defer { _ = try? Self.sh("umount -l \(Self.work)", check: false) }
        // The reference trees, and the registry the images are pushed to.
        try Self.sh("umoci unpack --image \(fixture)/source:t \(Self.work)/ref-a && umoci unpack --image \(fixture)/source:b \(Self.work)/ref-b")
        for tree in ["ref-a", "ref-b"] { try RichImage.followContainerd(reference: "\(Self.work)/\(tree)/rootfs") }
        try """
            version: 0.1
            storage:
              filesystem:
                rootdirectory: \(Self.work)/registry
            http:
              addr: \(Self.registryHost)
            log:
              level: error
            """.write(toFile: "\(Self.work)/registry.yml", atomically: true, encoding: .utf8)
        try Self.sh("docker-registry serve \(Self.work)/registry.yml > \(Self.work)/registry.log 2>&1 &")
        try Self.sh("for i in $(seq 100); do curl -sf http://\(Self.registryHost)/v2/ >/dev/null && exit 0; sleep 0.2; done; exit 1")
        for tag in ["a", "b", "c"] {
            try Self.sh("\(Self.ferry) push oci:\(fixture)/conv-\(tag):t \(Self.reference(tag)) --plain-http \(Self.registryHost)")
        }
        let refA = "\(Self.work)/ref-a/rootfs", refB = "\(Self.work)/ref-b/rootfs"

        // --- Phase 1: one ferryd with the chunk store. ---
        var daemon = try Daemon.start("one")

        // Laziness: a fresh mount fetches nothing; one small file fetches exactly its chunks.
        let mntA = try Self.mountpoint("mnt-a")
        let mountOutput = try daemon.ferry("mount \(Self.reference("a")) \(mntA)")
        #expect(mountOutput.contains("backend fscache"), "\(mountOutput)")
        let mounts = try readWholeFile("/proc/self/mounts")
        let line = mounts.split(separator: "\n").first { $0.contains(" \(mntA) ") }.map(String.init) ?? ""
        #expect(line.contains(" erofs ") && line.contains("fsid=ferry-"), "EROFS over fscache, no FUSE: \(line)")
        #expect(try daemon.fetched(Self.reference("a")) == 0, "nothing fetched at mount time")
        let lazy = try Self.chunkBytes("usr/lib/odd-size", layout: "\(fixture)/conv-a")
        #expect(Self.read(mntA + "/usr/lib/odd-size").bytes == Self.read(refA + "/usr/lib/odd-size").bytes)
        let fetchedLazy = try daemon.fetched(Self.reference("a"))
        #expect(fetchedLazy == lazy.compressed, "fetched exactly the file's compressed chunks (\(fetchedLazy) vs \(lazy.compressed))")
        Self.note("lazy-read: usr/lib/odd-size fetched \(fetchedLazy) bytes; its chunks are \(lazy.compressed) compressed / \(lazy.uncompressed) bytes")

        // Every byte and attribute equals umoci unpack.
        let diffA = try TreeDiff.differences(expected: refA, actual: mntA)
        #expect(diffA.isEmpty, "fscache mount differs from umoci unpack:\n\(diffA.joined(separator: "\n"))\n\(daemon.logText.suffix(3000))")
        let fetchedA = try daemon.fetched(Self.reference("a"))
        Self.note("full-read: image a fetched \(fetchedA) bytes from the registry")

        // Unmount, mount again elsewhere (new cookies): served from the local store, zero registry bytes.
        try daemon.ferry("umount \(mntA)")
        let mntA2 = try Self.mountpoint("mnt-a2")
        try daemon.ferry("mount \(Self.reference("a")) \(mntA2)")
        // ferryd dies (SIGKILL) with the mount in place; a new one takes the device over from the
        // holder, writes `restore` and serves the same mount.
        try daemon.kill()
        daemon = try Daemon.start("one")
        #expect(daemon.logText.contains("took over /dev/cachefiles"), "the restarted ferryd took the device over")
        let diffA2 = try Self.tarCompare(expected: refA, actual: mntA2)
        #expect(diffA2.isEmpty, "remount after a ferryd restart differs:\n\(diffA2)\n\(daemon.logText.suffix(3000))")
        let summary = try daemon.images()[Self.reference("a")]
        let registryBytes = (summary?["bytesBySource"] as? [String: Int])?["registry"] ?? 0
        let storeHits = summary?["storeHits"] as? Int ?? 0
        #expect(registryBytes == 0 && storeHits > 0, "remount served from the store (registry \(registryBytes) bytes, store hits \(storeHits))")
        Self.note("remount: registry bytes \(registryBytes), store hits \(storeHits) (after a SIGKILL restart of ferryd)")
        // A chunk corrupted in the registry: that file fails with EIO, others read fine.
        // Chunk 1 of usr/lib/odd-size at 32 KiB chunks: bytes no 64 KiB chunk of image a holds,
        // so it is not in the store and must come from the registry.
        let corrupt = try Self.chunkBytes("usr/lib/odd-size", layout: "\(fixture)/conv-c")
        let blobData = "\(Self.work)/registry/docker/registry/v2/blobs/sha256/\(corrupt.blob.prefix(2))/\(corrupt.blob)/data"
        try Self.sh("printf '\\377' | dd of=\(blobData) bs=1 seek=\(corrupt.offsets[1] + 3) conv=notrunc status=none")
        let mntC = try Self.mountpoint("mnt-c")
        try daemon.ferry("mount \(Self.reference("c")) \(mntC)")
        let bad = Self.read(mntC + "/usr/lib/odd-size")
        #expect(bad.bytes == nil && bad.errno == EIO, "a corrupt chunk gives EIO (got errno \(bad.errno), \(bad.bytes?.count ?? -1) bytes)")
        let good = Self.read(mntC + "/usr/lib/big.bin")
        #expect(good.bytes != nil && good.bytes == Self.read(refA + "/usr/lib/big.bin").bytes, "other files of the image read fine")
        #expect(daemon.logText.contains(corrupt.blob.prefix(12)) || daemon.logText.contains(corrupt.blob), "the log names the blob")
        #expect(daemon.logText.contains("chunk"), "the log names the chunk")
        Self.note("corrupt-chunk: errno \(bad.errno) on usr/lib/odd-size; big.bin read \(good.bytes?.count ?? -1) bytes")
        try daemon.ferry("umount \(mntC)")

        // Restarts while readers read: each round mounts image a afresh (new cookies, so every read
        // goes through ferryd, from the store), starts readers comparing files byte for byte, and
        // kills ferryd (SIGKILL) or stops it (SIGTERM, an upgrade) under them; the next ferryd takes
        // the device over and the readers must finish with the right bytes.
        let files = ["usr/lib/odd-size", "usr/lib/big.bin", "etc/shared", "bin/tool"]
        var stalls: [String] = []
        for round in 0..<20 {
            let signal = round < 10 ? "KILL" : "TERM"
            let mnt = try Self.mountpoint("mnt-r\(round)")
            try daemon.ferry("mount \(Self.reference("a")) \(mnt)")
            let marker = "\(Self.work)/reader-\(round)"
            let readers = files.map { "cmp \(mnt)/\($0) \(refA)/\($0)" }.joined(separator: " && ")
            try Self.sh("( \(readers) && echo ok > \(marker) || echo fail > \(marker) ) > /dev/null 2>&1 &")
            try Self.sh("pkill -\(signal) -f '\(Self.ferryd) --backend fscache --state-dir \(daemon.state) '; sleep 0.3", check: false)
            let t0 = Date()
            try daemon.launch()
            // Up to 300 s: in the TCG guest the readers take 40-60 s after a restart on a quiet host,
            // and went past the 60 s once allowed when the host was busy.
            try Self.sh("for i in $(seq 3000); do [ -s \(marker) ] && exit 0; sleep 0.1; done; exit 1")
            let verdict = (try? String(contentsOfFile: marker, encoding: .utf8)) ?? ""
            #expect(verdict == "ok\n", "round \(round) (SIG\(signal)): readers got \(verdict)\n\(daemon.logText.suffix(2000))")
            stalls.append(String(format: "%.1f", Date().timeIntervalSince(t0)))
        }
        #expect(try readWholeFile("/proc/self/mounts").contains("\(Self.work)/mnt-r0 "), "mounts stay mounted")
        Self.note("restarts: 10 SIGKILL + 10 SIGTERM under readers, all bytes right; seconds from restart to readers done: \(stalls.joined(separator: " "))")
        for round in 0..<20 { _ = try? daemon.ferry("umount \(Self.work)/mnt-r\(round)") }

        try daemon.ferry("umount \(mntA2)")
        try daemon.kill()
        try Self.sh("pkill -9 -f 'hold-group --socket \(daemon.state)/' ; sleep 1", check: false)

        // --- Phase 2: a fresh ferryd without the chunk store; A and B share blobs in one domain. ---
        try #"{"chunk_store": false}"#.write(toFile: "\(Self.work)/nostore.json", atomically: true, encoding: .utf8)
        let two = try Daemon.start("two", extra: "--config \(Self.work)/nostore.json")
        let mntDA = try Self.mountpoint("mnt-da"), mntDB = try Self.mountpoint("mnt-db")
        try two.ferry("mount \(Self.reference("a")) \(mntDA) --domain ferrytest")
        try two.ferry("mount \(Self.reference("b")) \(mntDB) --domain ferrytest")
        let line2 = try readWholeFile("/proc/self/mounts").split(separator: "\n").first { $0.contains(" \(mntDB) ") } ?? ""
        #expect(line2.contains("domain_id=ferrytest"), "\(line2)")
        let diffDA = try Self.tarCompare(expected: refA, actual: mntDA)
        #expect(diffDA.isEmpty, "\(diffDA)")
        let diffDB = try TreeDiff.differences(expected: refB, actual: mntDB)
        #expect(diffDB.isEmpty, "\(diffDB.joined(separator: "\n"))\n\(two.logText.suffix(3000))")
        let images = try two.images()
        let fetchedDA = images[Self.reference("a")]?["bytesFetched"] as? Int ?? -1
        let fetchedDB = images[Self.reference("b")]?["bytesFetched"] as? Int ?? -1
        let requestedDB = images[Self.reference("b")]?["bytesRequested"] as? Int ?? -1
        let onlyB = try Self.chunkBytes("opt/b-only", layout: "\(fixture)/conv-b")
        // A's blobs were read once (for A); B fetched only its own layer's chunks.
        #expect(fetchedDA == fetchedA, "a in the domain fetched what a alone fetched (\(fetchedDA) vs \(fetchedA))")
        #expect(fetchedDB == onlyB.compressed, "b fetched only its own blob (\(fetchedDB) vs \(onlyB.compressed)): shared chunks once")
        Self.note("domain: a fetched \(fetchedDA), b fetched \(fetchedDB) (its own layer: \(onlyB.compressed)); b requested \(requestedDB) bytes")
        try two.ferry("umount \(mntDA)")
        try two.ferry("umount \(mntDB)")
        try two.kill()
    }
}
