import Daemon
import Dispatch
import Logging

// A test tool, not part of Ferry: the one unsafe line turns libFuzzer's input into [UInt8].
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    route(input)
    return 0
}

/// The input is `METHOD TARGET\nBODY`. The target is split as `HTTPListener` splits it, and the
/// request goes through `FerryDaemon.handle` — every route, including the JSON decoding of
/// `POST /mounts` and `POST /gc` — with no kernel behind it: images never resolve, the backend
/// and the mounter refuse, so a mount request fails after its body has been validated.
func route(_ input: [UInt8]) {
    let newline = input.firstIndex(of: 0x0A) ?? input.endIndex
    let line = String(decoding: input[..<newline], as: UTF8.self)
    let body = newline < input.endIndex ? Array(input[(newline + 1)...]) : []
    let words = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
    let method = String(words[0]), target = words.count > 1 ? String(words[1]) : "/"
    let (path, query) = ControlHTTP.splitTarget(target)
    let request = ControlRequest(method: method, path: path, query: query, body: body)
    // libFuzzer calls this function synchronously; the route is async. A test tool may block.
    let done = DispatchSemaphore(value: 0)
    Task {
        _ = await daemon.handle(request)
        done.signal()
    }
    done.wait()
}

let daemon: FerryDaemon = {
    var configuration = DaemonConfiguration()
    configuration.stateDirectory = "/nonexistent/ferry-fuzz"
    return FerryDaemon(configuration: configuration, backend: NoKernel(),
                       resolver: { reference, _ in throw NoKernel.Refused(what: reference) },
                       mounter: NoKernel(), logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
}()

/// Backend and mounter that refuse everything (the harness runs without a kernel).
final class NoKernel: KernelBackend, Mounter, Sendable {
    struct Refused: Error { var what: String }
    var name: String { "fanotify" }
    func attach(_ image: RegisteredImage, mount: MountRequest) throws -> MountPlan { throw Refused(what: image.id) }
    func detach(_ image: RegisteredImage, mount: MountRequest) {}
    func run() throws {}
    func stop() {}
    func beginRestore() {}
    func endRestore() {}
    func mount(_ plan: MountPlan, at target: String, readaheadKiB: Int?) throws { throw Refused(what: target) }
    func unmount(_ target: String) throws { throw Refused(what: target) }
}
