import FerrySystem

// A test tool, not part of Ferry: the one unsafe line turns libFuzzer's input into [UInt8].
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    // One read(2) of /dev/cachefiles returns one message of at most CachefilesMessage.maxSize.
    guard let message = try? CachefilesMessage.parse(input[...]) else { return 0 }
    if case .open(let open) = message.request { _ = open.cookieKeyString }
    // What parses must encode to bytes that parse back to the same message.
    let again = try? CachefilesMessage.parse(message.encoded()[...])
    precondition(again == message, "cachefiles message does not round-trip: \(message) → \(String(describing: again))")
    return 0
}
