import Testing
@testable import FerrySystem

/// Parsers of kernel messages, fed synthetic bytes laid out as the uapi headers say.
@Suite struct KernelMessageTests {
    /// struct fanotify_event_metadata (24 bytes) followed by a struct fanotify_event_info_range
    /// (24 bytes), all fields distinct so a swapped offset shows.
    static func preAccessEvent(fd: Int32, pid: Int32, offset: UInt64, count: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 48)
        b[0] = 48; b[1] = 0; b[2] = 0; b[3] = 0          // event_len
        b[4] = 3                                          // vers
        b[5] = 0                                          // reserved
        b[6] = 24; b[7] = 0                               // metadata_len
        b[8] = 0x00; b[9] = 0x00; b[10] = 0x10; b[11] = 0x00   // mask = FAN_PRE_ACCESS
        for i in 0..<4 { b[16 + i] = UInt8(truncatingIfNeeded: UInt32(bitPattern: fd) >> (8 * UInt32(i))) }
        for i in 0..<4 { b[20 + i] = UInt8(truncatingIfNeeded: UInt32(bitPattern: pid) >> (8 * UInt32(i))) }
        b[24] = 6; b[25] = 0; b[26] = 24; b[27] = 0      // info header: type RANGE, len 24
        for i in 0..<8 { b[32 + i] = UInt8(truncatingIfNeeded: offset >> (8 * UInt64(i))) }
        for i in 0..<8 { b[40 + i] = UInt8(truncatingIfNeeded: count >> (8 * UInt64(i))) }
        return b
    }

    @Test func fanotifyEventWithRangeParsesEveryField() throws {
        let bytes = Self.preAccessEvent(fd: 0x0102_0304, pid: 0x0a0b_0c0d, offset: 0x1122_3344_5566_7788, count: 0x0000_0000_0002_0000)
        let events = try FanotifyEvent.parse(bytes[...])
        #expect(events == [FanotifyEvent(mask: 0x0010_0000, fd: 0x0102_0304, pid: 0x0a0b_0c0d,
                                         range: FanotifyRange(offset: 0x1122_3344_5566_7788, count: 0x20000))])
        #expect(events[0].isPermissionEvent)
    }

    @Test func fanotifyParsesSeveralEventsAndKeepsUnknownRecords() throws {
        var second = Self.preAccessEvent(fd: 9, pid: 10, offset: 4096, count: 8192)
        // Insert an unknown 8-byte record (type 4, pidfd) before the range record.
        second.insert(contentsOf: [4, 0, 8, 0, 0x2a, 0, 0, 0], at: 24)
        second[0] = 56
        let events = try FanotifyEvent.parse((Self.preAccessEvent(fd: 7, pid: 8, offset: 0, count: 4096) + second)[...])
        #expect(events.count == 2)
        #expect(events[0].fd == 7 && events[0].range == FanotifyRange(offset: 0, count: 4096))
        #expect(events[1].fd == 9 && events[1].pid == 10 && events[1].range == FanotifyRange(offset: 4096, count: 8192))
        #expect(events[1].otherRecords == [FanotifyInfoRecord(type: 4, bytes: [4, 0, 8, 0, 0x2a, 0, 0, 0])])
    }

    @Test func fanotifyRejectsBrokenMetadata() {
        let good = Self.preAccessEvent(fd: 3, pid: 4, offset: 0, count: 1)
        var shortLen = good; shortLen[0] = 23
        var longLen = good; longLen[0] = 49
        var version = good; version[4] = 2
        var metaLen = good; metaLen[6] = 50
        for bad in [Array(good[0..<23]), shortLen, longLen, version, metaLen] {
            #expect(throws: SystemError.self) { try FanotifyEvent.parse(bad[...]) }
        }
    }

    @Test func fanotifyReportsBadInfoRecordsOnTheEventItself() throws {
        var truncatedRange = Self.preAccessEvent(fd: 5, pid: 6, offset: 0, count: 1)
        truncatedRange[26] = 40          // record len larger than what is left
        var tinyRange = Self.preAccessEvent(fd: 5, pid: 6, offset: 0, count: 1)
        tinyRange[26] = 8                // a range record must be 24 bytes
        for bytes in [truncatedRange, tinyRange] {
            let events = try FanotifyEvent.parse(bytes[...])
            #expect(events.count == 1)
            #expect(events[0].fd == 5)
            #expect(events[0].range == nil)
            #expect(events[0].infoProblem != nil)
        }
    }

    @Test func fanotifyResponsesEncodeFdAndDecision() {
        #expect(FanotifyResponse.allow.encoded(fd: 0x0102_0304) == [4, 3, 2, 1, 1, 0, 0, 0])
        #expect(FanotifyResponse.deny.encoded(fd: 5) == [5, 0, 0, 0, 2, 0, 0, 0])
        // FAN_DENY_ERRNO(EIO) = FAN_DENY | 5 << 24
        #expect(FanotifyResponse.denyWithErrno(5).rawValue == 0x0500_0002)
        #expect(FanotifyResponse.denyWithErrno(5).encoded(fd: -1) == [0xff, 0xff, 0xff, 0xff, 2, 0, 0, 5])
    }

    // MARK: cachefiles

    @Test func cachefilesOpenParsesEveryField() throws {
        // header: msg_id 0x01020304, opcode OPEN 0, len, object_id 0x0a0b0c0d
        let volume = Array("erofs,dom".utf8) + [0]
        let cookie: [UInt8] = [0x61, 0x62, 0x00, 0xff]
        var payload = [UInt8](repeating: 0, count: 16)
        payload[0] = UInt8(volume.count)
        payload[4] = UInt8(cookie.count)
        payload[8] = 0x21; payload[9] = 0x43           // fd 0x4321
        payload[12] = 0x08; payload[15] = 0x80          // flags 0x80000008
        payload += volume + cookie
        var bytes: [UInt8] = [4, 3, 2, 1, 0, 0, 0, 0, UInt8(16 + payload.count), 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a] + payload
        bytes += [0xee, 0xee]   // bytes past len are ignored
        let message = try CachefilesMessage.parse(bytes[...])
        let open = CachefilesOpen(volumeKey: "erofs,dom", cookieKey: cookie, fd: 0x4321, flags: 0x8000_0008)
        #expect(message == CachefilesMessage(messageID: 0x0102_0304, objectID: 0x0a0b_0c0d, request: .open(open)))
        #expect(message.encoded() == Array(bytes.dropLast(2)))
    }

    @Test func cachefilesReadAndCloseParse() throws {
        var read: [UInt8] = [9, 0, 0, 0, 2, 0, 0, 0, 32, 0, 0, 0, 7, 0, 0, 0]
        read += [0x00, 0x10, 0, 0, 0x01, 0, 0, 0]   // off 0x1_0000_1000
        read += [0x00, 0x00, 0x02, 0, 0, 0, 0, 0]   // len 0x20000
        let m = try CachefilesMessage.parse(read[...])
        #expect(m == CachefilesMessage(messageID: 9, objectID: 7, request: .read(offset: 0x1_0000_1000, length: 0x20000)))
        #expect(m.encoded() == read)

        let close: [UInt8] = [10, 0, 0, 0, 1, 0, 0, 0, 16, 0, 0, 0, 7, 0, 0, 0]
        let c = try CachefilesMessage.parse(close[...])
        #expect(c == CachefilesMessage(messageID: 10, objectID: 7, request: .close))
        #expect(c.encoded() == close)

        let future: [UInt8] = [11, 0, 0, 0, 9, 0, 0, 0, 18, 0, 0, 0, 7, 0, 0, 0, 0xab, 0xcd]
        #expect(try CachefilesMessage.parse(future[...]).request == .unknown(opcode: 9, payload: [0xab, 0xcd]))
    }

    @Test func cachefilesRejectsBadLengths() {
        let header: [UInt8] = [1, 0, 0, 0, 2, 0, 0, 0, 32, 0, 0, 0, 1, 0, 0, 0]
        let cases: [[UInt8]] = [
            Array(header[0..<15]),                                       // short header
            header,                                                      // len 32 > 16 bytes read
            [1, 0, 0, 0, 2, 0, 0, 0, 15, 0, 0, 0, 1, 0, 0, 0],           // len < header
            [1, 0, 0, 0, 2, 0, 0, 0, 24, 0, 0, 0, 1, 0, 0, 0] + [UInt8](repeating: 0, count: 8),  // READ payload 8
            [1, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 1, 0, 0, 0] + [UInt8](repeating: 0, count: 8),  // OPEN payload 8
            // OPEN whose key sizes exceed the payload
            [1, 0, 0, 0, 0, 0, 0, 0, 36, 0, 0, 0, 1, 0, 0, 0] + [3, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0] + [0x61, 0x62, 0, 0x63],
        ]
        for bytes in cases {
            #expect(throws: SystemError.self) { try CachefilesMessage.parse(bytes[...]) }
        }
    }

    @Test func cachefilesCommandsAndIoctlNumber() {
        #expect(CachefilesCommand.directory("/var/cache/ferry").text == "dir /var/cache/ferry")
        #expect(CachefilesCommand.tag("ferry").text == "tag ferry")
        #expect(CachefilesCommand.bindOnDemand.text == "bind ondemand")
        #expect(CachefilesCommand.openComplete(messageID: 12, size: 1 << 33).text == "copen 12,8589934592")
        #expect(CachefilesCommand.openFailed(messageID: 3, errno: 2).text == "copen 3,-2")
        #expect(CachefilesCommand.restore.text == "restore")
        #expect(CachefilesObject.readCompleteIoctl == 0x4004_9801)
        #expect(CachefilesObject.readCompleteIoctl == CachefilesObject.readCompleteIoctlFromHeader)
    }

    // MARK: mount options

    @Test func erofsMountOptions() throws {
        #expect(try Mount.erofsDeviceOptions(["/c/a.blob", "/c/b.blob"]) == "device=/c/a.blob,device=/c/b.blob")
        #expect(try Mount.erofsDeviceOptions([]) == "")
        #expect(try Mount.erofsFscacheOptions(fsid: "img1") == "fsid=img1")
        #expect(try Mount.erofsFscacheOptions(fsid: "img1", domainID: "d") == "fsid=img1,domain_id=d")
        #expect(throws: SystemError.self) { try Mount.erofsDeviceOptions(["/a,b"]) }
        #expect(throws: SystemError.self) { try Mount.erofsFscacheOptions(fsid: "") }
    }
}
