import ArgumentParser
import Daemon
import FerrySystem
import Foundation

/// `ferry trace MOUNTPOINT|IMAGE`: the files an image's mounts read first, in order (ferryd's access trace).
struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show which files a mounted image read first, in order, with when (ferryd's access trace).",
        discussion: """
            ferryd records, per image, the chunks the kernel asked for first, from the image's first mount on. \
            The default output lists files in first-access order: milliseconds after the mount, chunks read of the \
            file's chunks, path. --json prints every chunk entry as well.
            """)
    @Argument(help: "A ferryd mountpoint, or an image id (a prefix is enough) or reference.") var target: String
    @Flag(help: "Print the trace as JSON.") var json = false
    @Option(help: "Write the JSON trace to this file (atomically) instead of printing it.") var output: String?
    @OptionGroup var daemon: DaemonConnection

    func run() throws {
        try reportingErrors {
            let response = try daemon.send("GET", "/trace?\(query)")
            if let output {
                try writeFileAtomically(response.body, to: output)
                return
            }
            if json {
                print(String(decoding: response.body, as: UTF8.self), terminator: "")
                return
            }
            let report = try JSONDecoder().decode(FerryDaemon.TraceReport.self, from: Data(response.body))
            print(Self.render(report), terminator: "")
        }
    }

    /// `mount=PATH` when `target` is a directory, else `image=ID`.
    private var query: String {
        var isDirectory: ObjCBool = false
        let characters = UnmountImage.queryValueCharacters
        if FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory), isDirectory.boolValue {
            let path = MountpointPath.normalized(target, relativeTo: FileManager.default.currentDirectoryPath)
            return "mount=" + (path.addingPercentEncoding(withAllowedCharacters: characters) ?? path)
        }
        return "image=" + (target.addingPercentEncoding(withAllowedCharacters: characters) ?? target)
    }

    static func render(_ report: FerryDaemon.TraceReport) -> String {
        var out = "image \(report.id.prefix(12)) \(report.image), traced since \(report.mountTime): "
            + "\(report.entries.count) chunk(s) read first, \(report.files.count) file(s)"
            + (report.overflow > 0 ? ", \(report.overflow) more chunk(s) not kept (trace full)" : "") + "\n"
        let width = report.files.map { String(format: "%.1f", $0.offsetMs).count }.max() ?? 0
        for file in report.files {
            let offset = String(format: "%.1f", file.offsetMs)
            out += String(repeating: " ", count: width - offset.count) + offset + " ms  "
                + "\(file.chunksRead)/\(file.chunks) chunk(s)  \(file.path)\n"
        }
        return out
    }
}
