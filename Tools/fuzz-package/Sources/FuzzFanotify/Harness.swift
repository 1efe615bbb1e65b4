import FerrySystem

// A test tool, not part of Ferry: the one unsafe line turns libFuzzer's input into [UInt8].
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    // One read(2) of a fanotify group fd: any number of events back to back.
    if let events = try? FanotifyEvent.parse(input[...]) {
        for event in events { _ = (event.isPermissionEvent, event.range, event.otherRecords.count) }
    }
    return 0
}
