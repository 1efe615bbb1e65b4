import FerrySystem

// A test tool, not part of Ferry: the one unsafe line turns libFuzzer's input into [UInt8].
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    // One read(2) of /dev/cachefiles returns one message of at most CachefilesMessage.maxSize.
    if let message = try? CachefilesMessage.parse(input[...]), case .open(let open) = message.request {
        _ = open.cookieKeyString
        _ = open.encoded()
    }
    return 0
}
