import FerrySystem
import Foundation
import Testing

/// The guest half of `SystemdVMTests` and `SystemdNspawnTests`: ferryd under Debian's systemd
/// 252 as PID 1 — with the fscache backend in `Tools/vm --systemd` (Linux 6.1), with the fanotify
/// backend in `Tools/nspawn` (a container booted on this machine's ≥ 6.14 kernel) — installed as
/// a user installs it — binaries in /usr/local/bin, `ferry install-service`,
/// /etc/ferry/ferryd.json (fscache: the state directory on an ext4 image) — `systemctl enable
/// --now ferryd` — and driven only with `systemctl`, `journalctl` and `ferry`, while
/// byte-comparing readers (`GuestReaders`) read a lazily mounted image throughout.
/// `FERRY_SYSTEMD_BACKEND` names the backend (default fscache). Figures go to
/// `$FERRY_VM_OUT/systemd-figures.txt`; nothing is timed against a limit. Shell commands run
/// through `system(3)` (`FscacheGuestTests.sh`).
@Suite(.serialized) struct SystemdGuestTests {
    static let environment = ProcessInfo.processInfo.environment
    static var fixture: String? { environment["FERRY_SYSTEMD_FIXTURE"] }
    /// The kernel backend under test: `fscache` (the VM) or `fanotify` (the nspawn container).
    static var backend: String { environment["FERRY_SYSTEMD_BACKEND"] ?? "fscache" }
    static var enabled: Bool {
        fixture != nil && FileManager.default.fileExists(atPath: "/run/systemd/system")
            && (backend == "fanotify" || FileManager.default.fileExists(atPath: "/dev/cachefiles"))
    }
    /// `systemctl restart` rounds and `systemctl kill -s SIGKILL` rounds (each).
    static var rounds: Int { environment["FERRY_SYSTEMD_ROUNDS"].flatMap(Int.init) ?? 10 }
    static var bin: String { environment["FERRY_BIN"] ?? Build.binDirectory }
    static let image = "oci:\(fixture ?? "")/conv:t"
    /// The image of the base mount that the readers read throughout. The fanotify run gives it
    /// its own blobs (`FERRY_SYSTEMD_BASE_LAYOUT`, the same files converted at another chunk
    /// size): a cache file that a pass has filled completely is never asked about again, so each
    /// round's fresh mount of `image` is cold only if nothing else keeps `image`'s cache files —
    /// they are evicted (`ferry gc`) after each round.
    static var baseImage: String { environment["FERRY_SYSTEMD_BASE_LAYOUT"].map { "oci:\(fixture ?? "")/\($0)" } ?? image }
    static var evictAfterEachRound: Bool { baseImage != image }
    static let scratch = "/run/tmp/systemd-test"
    static let stateImage = "/var/tmp/ferry-state.ext4"
    static let dropIn = "/etc/systemd/system/ferryd.service.d/50-test-watchdog.conf"

    typealias Failed = FscacheGuestTests.Failed

    @discardableResult
    static func sh(_ command: String, check: Bool = true) throws -> (status: Int32, output: String) {
        try FscacheGuestTests.sh(command, check: check)
    }

    static func note(_ line: String) {
        print("systemd-guest: \(line)")
        guard let out = environment["FERRY_VM_OUT"] else { return }
        let path = out + "/systemd-figures.txt"
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        if let handle = FileHandle(forWritingAtPath: path) {
            handle.seekToEndOfFile()
            handle.write(Data((line + "\n").utf8))
            try? handle.close()
        }
    }

    static func seconds(since start: UInt64) -> Double { Double(GuestReaders.now - start) / 1e9 }
    static func format(_ seconds: Double) -> String { String(format: "%.1f", seconds) }

    /// Polls `condition` every 0.2 s for up to `timeout` seconds.
    static func wait(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            usleep(200_000)
        }
        throw Failed(description: "timed out after \(Int(timeout)) s waiting for \(what)")
    }

    static func mainPID() -> Int {
        Int((try? sh("systemctl show -p MainPID --value ferryd", check: false).output)?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
    }

    static func isActive() -> Bool {
        (try? sh("systemctl is-active ferryd", check: false).output)?.hasPrefix("active") == true
    }

    /// Whether ferryd's control socket answers `ferry status`. The CLI itself (a 150 MB debug
    /// build) can take many seconds to start in the TCG guest on a busy host, so it gets 120 s;
    /// a socket that does not listen fails at once ("cannot reach ferryd").
    static func answers() -> Bool { (try? sh("timeout 120 ferry status", check: false))?.status == 0 }

    /// `answers()`, and why not when it does not.
    static func answersOrWhy() -> (Bool, String) {
        let result = try? sh("timeout 120 ferry status", check: false)
        let status = result?.status ?? -1
        return (status == 0, status == 0 ? "" : "exit \(status): \((result?.output ?? "").suffix(300))")
    }

    static func journal() -> String { (try? sh("journalctl -u ferryd --no-pager -o short-monotonic", check: false).output) ?? "" }

    /// Waits for a ferryd other than `previous` to be the service's main process and to answer.
    static func waitForSuccessor(of previous: Int, timeout: Double = 300) throws {
        try wait("a new ferryd (was PID \(previous))", timeout: timeout) {
            let pid = mainPID()
            return pid != 0 && pid != previous && isActive() && answers()
        }
    }

    /// One disruption while the readers read a freshly mounted (cold) image: the disruption
    /// lands as soon as the first read of it is issued, so ferryd has requests of that mount in
    /// hand or queued when it goes (a warm mount is served from the cache files and never asks).
    /// Returns the round's figure line.
    static func round(_ name: String, readers: GuestReaders, base: String, _ disrupt: () throws -> Void) throws -> String {
        let mount = try mountpoint("mnt-\(name)")
        // Page by page (kernel readahead 0): a pass of the fresh mount is hundreds of requests to
        // ferryd, so some are in its hands or queued whenever the disruption lands.
        try sh("ferry mount \(image) \(mount) --kernel-readahead-kb 0")
        let before = mainPID()
        readers.read([mount, base], phase: name)
        try wait("the readers to reach \(mount)", timeout: 120) { readers.hasStartedReading(mount) }
        let start = GuestReaders.now
        try disrupt()
        let command = seconds(since: start)
        let waitingAfter = readers.oldestReadInProgress
        try waitForSuccessor(of: before)
        let back = seconds(since: start)
        try wait("the readers to finish a pass of \(mount) after \(name)", timeout: 300) { readers.passes(mount) >= 1 }
        let done = seconds(since: start)
        let mounts = try readWholeFile("/proc/self/mounts")
        #expect(mounts.contains(" \(base) ") && mounts.contains(" \(mount) "), "\(name): the mounts stay")
        let tally = readers.tally(name)
        try unmount(mount, readers: readers, keep: [base], phase: name)
        return "\(name): command returned after \(format(command)) s, new ferryd answering (seen by polling) after \(format(back)) s, "
            + "readers' pass of the fresh mount done after \(format(done)) s; a read waiting when the command returned: \(waitingAfter > 0 ? "yes (\(format(waitingAfter)) s so far)" : "no"); "
            + "longest read \(format(tally.longestStall)) s, files with a read of 1 s or more \(tally.slowFiles); files \(tally.files), wrong bytes \(tally.wrongBytes), failed reads \(tally.failedReads)"
    }

    /// Takes `mount` away from the readers and unmounts it once no reader holds a file in it.
    static func unmount(_ mount: String, readers: GuestReaders, keep: [String], phase: String) throws {
        readers.read(keep, phase: phase)
        try wait("\(mount) to unmount", timeout: 120) { try sh("ferry umount \(mount)", check: false).status == 0 }
        if evictAfterEachRound { try sh("ferry gc") }
    }

    static func mountpoint(_ name: String) throws -> String {
        let path = "\(scratch)/\(name)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test(.enabled(if: enabled, "runs inside `Tools/vm --systemd` (systemd as PID 1, /dev/cachefiles) or `Tools/nspawn` with a fixture from SystemdVMTests or SystemdNspawnTests"))
    func ferrydUnderSystemd() throws {
        let fixture = try #require(Self.fixture)
        let reference = Self.environment["FERRY_SYSTEMD_REFERENCE"] ?? fixture + "/reference"
        Self.note("boot: systemd started the test \((try? String(contentsOfFile: (Self.environment["FERRY_VM_OUT"] ?? "") + "/boot-seconds", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?") s after the kernel")

        // --- Install as a user does. ---
        try Self.sh("install -m 0755 \(Self.bin)/ferry \(Self.bin)/ferryd /usr/local/bin/")
        let install = try Self.sh("timeout 300 ferry install-service --ferryd /usr/local/bin/ferryd")
        #expect(install.output.contains("wrote /etc/systemd/system/ferryd.service") && install.output.contains("systemd reloaded"),
                "\(install.output)")
        if Self.backend == "fscache" {
            // The state directory on its own ext4 filesystem (cachefiles needs xattrs and direct
            // I/O; the guest's root is an overlay over 9p).
            try Self.sh("""
                truncate -s 512M \(Self.stateImage) && mkfs.ext4 -q -F \(Self.stateImage) && mkdir -p /var/lib/ferry \
                && mount -o loop \(Self.stateImage) /var/lib/ferry
                """)
        }
        // In the container /var lies on the host's disk: the state directory stays where the unit's
        // StateDirectory= puts it.
        try Self.sh("mkdir -p /etc/ferry \(Self.scratch)")
        // The page cache can be dropped between passes only where /proc/sys is writable: nspawn
        // binds it read-only; a container with CAP_SYS_ADMIN may bind it writable again.
        // Likewise /sys, where ferryd sets each mount's kernel readahead.
        if Self.environment["FERRY_IN_NSPAWN"] != nil {
            let procSys = try Self.sh("mount -o remount,bind,rw /proc/sys", check: false).status == 0
            let sys = try Self.sh("mount -o remount,rw /sys", check: false).status == 0
            Self.note("container: /proc/sys made writable for drop_caches: \(procSys ? "yes" : "no (readers keep the page cache)"); /sys for kernel readahead: \(sys ? "yes" : "no")")
        }
        // No sequential readahead in ferryd (it fills only the chunks asked for): with 16 KiB chunks
        // and the fresh mounts' kernel readahead 0, a pass of a fresh mount is about a hundred
        // requests to ferryd rather than a handful, so a disruption finds some in its hands.
        try #"{"backend": "\#(Self.backend)", "state_dir": "/var/lib/ferry", "readahead_bytes": 0}"#
            .write(toFile: "/etc/ferry/ferryd.json", atomically: true, encoding: .utf8)
        try Self.sh("systemctl daemon-reload")

        // --- Start: returns only once ferryd is ready; the control socket answers right then. ---
        var start = GuestReaders.now
        try Self.sh("systemctl enable --now ferryd")
        let enableSeconds = Self.seconds(since: start)
        let answeredAtOnce = Self.answers()
        #expect(answeredAtOnce, "`systemctl enable --now ferryd` returned before the control socket answered\n\(Self.journal().suffix(3000))")
        let status = try Self.sh("systemctl status ferryd --no-pager -l", check: false).output
        let statusLine = status.split(separator: "\n").first { $0.contains("Status: \"") }.map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(statusLine?.contains("serving 0 mount(s) of 0 image(s) with \(Self.backend)") == true, "systemctl status shows ferryd's STATUS=:\n\(status)")
        #expect(Self.journal().contains("kernel descriptor handed to the service manager's store"), "the device went to the fd store")
        Self.note("start: `systemctl enable --now ferryd` returned after \(Self.format(enableSeconds)) s; control socket answered at once: \(answeredAtOnce ? "yes" : "no"); systemctl status: \(statusLine ?? "(no Status: line)")")

        // --- The base mount and the readers. ---
        let readers = try GuestReaders(reference: reference)
        let base = try Self.mountpoint("mnt-base")
        try Self.sh("ferry mount \(Self.baseImage) \(base)")
        readers.read([base], phase: "first-read")
        start = GuestReaders.now
        readers.start(count: 2)
        defer { if !readers.stop(timeout: 120) { Self.note("readers still blocked at the end") } }
        try Self.wait("a first pass of the base mount", timeout: 600) { readers.passes(base) >= 1 }
        Self.note("image: \(readers.fileCount) files, \(readers.referenceBytes) bytes ; first lazy pass of the base mount: \(Self.format(Self.seconds(since: start))) s")
        // ferryd refreshes STATUS= every second: the mount shows up in `systemctl status`.
        var status2 = ""
        do {
            try Self.wait("`systemctl status` to show the mount", timeout: 60) {
                status2 = try Self.sh("systemctl show -p StatusText --value ferryd", check: false).output
                return status2.contains("serving 1 mount(s) of 1 image(s)")
            }
        } catch {
            Issue.record("systemctl status does not show the mount: \(status2)")
        }
        Self.note("status with a mount: \(status2.trimmingCharacters(in: .whitespacesAndNewlines))")

        // --- Restarts and SIGKILLs under the readers. ---
        var names: [String] = []
        for index in 1...Self.rounds {
            let name = "restart-\(index)"
            names.append(name)
            var (readyAtReturn, why) = (false, "")
            let line = try Self.round(name, readers: readers, base: base) {
                try Self.sh("systemctl restart ferryd")
                (readyAtReturn, why) = Self.answersOrWhy()
            }
            #expect(readyAtReturn, "\(name): `systemctl restart` returned before ferryd answered: \(why)")
            Self.note(line + "; answering when systemctl returned: \(readyAtReturn ? "yes" : "no \(why)")")
        }
        for index in 1...Self.rounds {
            let name = "sigkill-\(index)"
            names.append(name)
            Self.note(try Self.round(name, readers: readers, base: base) { try Self.sh("systemctl kill -s SIGKILL ferryd") })
        }

        // --- Watchdog: a stopped ferryd is killed and restarted by systemd. ---
        try FileManager.default.createDirectory(atPath: (Self.dropIn as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try "[Service]\nWatchdogSec=5s\n".write(toFile: Self.dropIn, atomically: true, encoding: .utf8)
        try Self.sh("systemctl daemon-reload && systemctl restart ferryd")
        names.append("watchdog")
        let stopped = Self.mainPID()
        let watchdogLine = try Self.round("watchdog", readers: readers, base: base) { try Self.sh("kill -STOP \(stopped)") }
        let journal = Self.journal()
        #expect(journal.contains("Watchdog timeout"), "systemd's watchdog fired:\n\(journal.suffix(3000))")
        Self.note(watchdogLine + "; journal: " + (journal.split(separator: "\n").filter { $0.contains("Watchdog timeout") || $0.contains("Killing process") || $0.contains("Main process exited") }.suffix(3).joined(separator: " | ")))
        try FileManager.default.removeItem(atPath: Self.dropIn)
        try Self.sh("systemctl daemon-reload")

        // --- Upgrade: the binary replaced as a package manager does (new file, rename), then restart. ---
        try Self.sh("install -m 0755 \(Self.bin)/ferryd /usr/local/bin/ferryd.new && mv -f /usr/local/bin/ferryd.new /usr/local/bin/ferryd")
        let oldExe = try Self.sh("readlink /proc/\(Self.mainPID())/exe").output
        #expect(oldExe.contains("(deleted)"), "the running ferryd is the replaced file: \(oldExe)")
        names.append("upgrade")
        let upgradeLine = try Self.round("upgrade", readers: readers, base: base) { try Self.sh("systemctl restart ferryd") }
        let newExe = try Self.sh("readlink /proc/\(Self.mainPID())/exe").output
        #expect(newExe.trimmingCharacters(in: .whitespacesAndNewlines) == "/usr/local/bin/ferryd", "the new binary runs: \(newExe)")
        Self.note(upgradeLine + "; before: \(oldExe.trimmingCharacters(in: .whitespacesAndNewlines)), after: \(newExe.trimmingCharacters(in: .whitespacesAndNewlines))")

        // Every disruption so far: no wrong byte, no failed read.
        var total = GuestReaders.Tally()
        for name in ["first-read"] + names {
            let t = readers.tally(name)
            total.files += t.files
            total.bytes += t.bytes
            total.wrongBytes += t.wrongBytes
            total.failedReads += t.failedReads
            total.failures += t.failures
            total.longestStall = max(total.longestStall, t.longestStall)
        }
        #expect(total.wrongBytes == 0 && total.failedReads == 0, "readers across restarts, kills, watchdog, upgrade:\n\(total.failures.joined(separator: "\n"))\n\(journal.suffix(4000))")
        Self.note("readers across \(Self.rounds) restarts, \(Self.rounds) SIGKILLs, the watchdog kill and the upgrade: \(total.files) files, \(total.bytes) bytes, wrong bytes \(total.wrongBytes), failed reads \(total.failedReads), longest read \(Self.format(total.longestStall)) s")

        // --- `systemctl stop`, then start. ---
        try stopAndStart(readers: readers, base: base)
    }

    /// `systemctl stop ferryd` with readers on a cold mount, for a while, then `systemctl start`.
    /// systemd 252 empties the descriptor store on a stop; the holder unit ferryd started
    /// (`ferryd-fanotify-holder` / `ferryd-cachefiles-holder`) keeps the kernel descriptor, so
    /// readers wait while no ferryd runs and the next ferryd takes the descriptor over and serves
    /// them — Kernel-Notes/failover.md's `systemctl stop` row.
    func stopAndStart(readers: GuestReaders, base: String) throws {
        let holderUnit = Self.backend == "fscache" ? "ferryd-cachefiles-holder" : "ferryd-fanotify-holder"
        let mount = try Self.mountpoint("mnt-stop")
        try Self.sh("ferry mount \(Self.image) \(mount) --kernel-readahead-kb 0")
        readers.read([mount, base], phase: "stopped")
        try Self.wait("the readers to reach \(mount)", timeout: 120) { readers.hasStartedReading(mount) }
        var start = GuestReaders.now
        try Self.sh("systemctl stop ferryd")
        let stopSeconds = Self.seconds(since: start)
        // Observe for 10 s with no ferryd.
        usleep(10_000_000)
        let stopped = readers.tally("stopped")
        let waiting = readers.oldestReadInProgress
        let mountsWhileStopped = try readWholeFile("/proc/self/mounts")
        let holderActive = (try? Self.sh("systemctl is-active \(holderUnit)", check: false).output)?.hasPrefix("active") == true
        Self.note("stop: `systemctl stop` returned after \(Self.format(stopSeconds)) s; 10 s later: mounts still listed: \(mountsWhileStopped.contains(" \(mount) ") && mountsWhileStopped.contains(" \(base) ") ? "yes" : "no"); \(holderUnit) active: \(holderActive ? "yes" : "no"); files read \(stopped.files), failed reads \(stopped.failedReads), wrong bytes \(stopped.wrongBytes), oldest read waiting \(Self.format(waiting)) s; first failures: \(stopped.failures.prefix(3).joined(separator: " | "))")

        let takeover = Self.backend == "fscache" ? "took over /dev/cachefiles from a previous ferryd" : "took over the fanotify group of a previous ferryd"
        let takeoversBefore = Self.journal().components(separatedBy: takeover).count
        let passesBefore = (readers.passes(base), readers.passes(mount))
        start = GuestReaders.now
        try Self.sh("systemctl start ferryd")
        let startSeconds = Self.seconds(since: start)
        let answered = Self.answers()
        #expect(answered, "`systemctl start ferryd` returned before the control socket answered")
        readers.setPhase("after-start")
        let tookOver = Self.journal().components(separatedBy: takeover).count > takeoversBefore
        var resumed = true
        do {
            try Self.wait("the readers to finish a pass of both mounts after the start", timeout: 180) {
                readers.passes(base) > passesBefore.0 && readers.passes(mount) > passesBefore.1
            }
        } catch {
            resumed = false
        }
        let after = readers.tally("after-start")
        Self.note("start after stop: returned after \(Self.format(startSeconds)) s, answering at once: \(answered ? "yes" : "no"), took the descriptor over from the holder unit: \(tookOver ? "yes" : "no"); readers completed passes of both mounts: \(resumed ? "yes" : "no"); files read \(after.files), failed reads \(after.failedReads), wrong bytes \(after.wrongBytes); first failures: \(after.failures.prefix(3).joined(separator: " | "))")
        // A fresh mount after the start.
        let fresh = try Self.mountpoint("mnt-fresh")
        let mounted = try Self.sh("ferry mount \(Self.image) \(fresh)", check: false)
        let freshOK = mounted.status == 0 && (try? Self.sh("tar -C \(fresh) -cf - . | wc -c", check: false))?.status == 0
        Self.note("a fresh mount after the start works: \(freshOK ? "yes" : "no")")
        #expect(holderActive, "\(holderUnit) keeps running while ferryd is stopped:\n\(Self.journal().suffix(3000))")
        #expect(stopped.wrongBytes == 0 && stopped.failedReads == 0 && after.wrongBytes == 0 && after.failedReads == 0,
                "no wrong byte and no failed read around stop/start:\n\((stopped.failures + after.failures).prefix(6).joined(separator: "\n"))")
        #expect(tookOver && resumed && freshOK, "the next ferryd takes over from the holder unit, readers go on, new mounts work")
    }
}
