import Foundation
import Testing

/// A real `ferryd` started by a test with its own state directory and socket.
final class DaemonProcess {
    let process = Process()
    let stateDirectory: String
    let socket: String
    let logPath: String
    /// Whether ending this object also ends the fanotify group holder (not when a successor
    /// ferryd of the same state directory took the group over from it).
    var endsGroupHolder = true

    init(workspace: Workspace, name: String = "ferryd", extraArguments: [String] = []) throws {
        stateDirectory = workspace.sub("\(name)-state")
        socket = workspace.sub("\(name).sock")
        logPath = workspace.sub("\(name).log")
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Build.ferryd)
        process.arguments = ["--state-dir", stateDirectory, "--socket", socket, "--log-level", "debug"] + extraArguments
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try waitForSocket()
    }

    private func waitForSocket() throws {
        for _ in 0..<200 {
            if let r = try? Shell.run([Build.ferry, "status", "--socket", socket]), r.status == 0 { return }
            if !process.isRunning { throw Shell.Failure(command: "ferryd", status: process.terminationStatus, output: log) }
            usleep(50_000)
        }
        throw Shell.Failure(command: "ferryd (waiting for \(socket))", status: -1, output: log)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// `ferry <arguments> --socket <this daemon's socket>`.
    @discardableResult
    func ferry(_ arguments: [String]) throws -> String {
        try Shell.check([Build.ferry] + arguments + ["--socket", socket])
    }

    /// The daemon's per-image figures.
    func images() throws -> [[String: Any]] {
        let out = try ferry(["status", "--json"])
        return (try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]) ?? []
    }

    func kill(signal: Int32 = SIGKILL) {
        if process.isRunning { Foundation.kill(process.processIdentifier, signal) }
        process.waitUntilExit()
    }

    deinit {
        kill()
        // The fanotify group holder outlives ferryd on purpose; a test's holder ends with the test.
        if endsGroupHolder { _ = try? Shell.run(["pkill", "-9", "-f", "hold-group --socket \(stateDirectory)/"]) }
    }
}
