import FerrySystem
public import ArgumentParser
import Foundation

/// The `ferry` command line: one subcommand per file, wiring only.
public struct FerryCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "Convert container images for lazy loading on EROFS, and inspect, check and export them.",
        subcommands: [Convert.self, Inspect.self, Check.self, Export.self, Materialize.self, MountImage.self, UnmountImage.self,
                      Status.self, Trace.self, CollectGarbage.self, InstallService.self, InstallContainerd.self, Pull.self, Push.self, RangeBench.self, BlobBench.self])
    public init() {}
}

/// Entry point of the `ferry` executable. Signals a parent left blocked (a multithreaded
/// parent's `Process` children inherit its mask) are unblocked, so `timeout`/SIGTERM end
/// `ferry status --watch` and friends.
public func runFerry() {
    ProcessInfoRaw.unblockAllSignals()
    FerryCommand.main()
}

/// Runs `body`, and turns any error into one line on stderr and exit status 1, which is what a
/// user (or a script) of `ferry` gets for every bad input.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ExitCode {
        throw error
    } catch {
        FileHandle.standardError.write(Data("ferry: error: \(error)\n".utf8))
        throw ExitCode.failure
    }
}

/// Parses sizes such as "1MiB", "512KiB", "4096", "16M".
func parseSize(_ text: String) throws -> UInt64 {
    let units: [(String, UInt64)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("B", 1)]
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        guard let n = UInt64(text.dropLast(suffix.count)) else { break }
        return n * factor
    }
    guard let n = UInt64(text) else { throw ValidationError("cannot parse size \"\(text)\" (e.g. 1MiB, 512KiB, 4096)") }
    return n
}
