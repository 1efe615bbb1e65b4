internal import CFerry
import FerrySystem
import Foundation

// The only file of the Registry module that touches libcurl's C API and raw pointers. Everything
// above it sees `CurlEasy.perform(_:body:)` with Swift values in and out.

/// `curl_global_init` exactly once per process, before the first handle is made.
enum CurlGlobal {
    static let initialized: Bool = curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK
}

/// The body of a request.
enum CurlUploadBody: Sendable {
    case none
    /// A small in-memory body (manifests, token forms), copied into curl.
    case bytes([UInt8])
    /// `length` bytes of an open file from `offset`, read on demand (bounded memory).
    case file(FileDescriptor, offset: UInt64, length: UInt64)
}

/// Everything curl needs for one request.
struct CurlRequestSpec: Sendable {
    var method: String = "GET"
    var url: String
    /// Full header lines, e.g. "Accept: …".
    var headers: [String] = []
    var body: CurlUploadBody = .none
    var followRedirects = true
    var verifyTLS = true
    var caCertificatePath: String?
    var connectTimeoutMs = 10_000
    /// Abort when fewer than `lowSpeedLimit` bytes/s flow for `lowSpeedTimeSeconds`.
    var lowSpeedLimit = 1
    var lowSpeedTimeSeconds = 30
    /// Whole-transfer timeout; 0 means none.
    var totalTimeoutMs = 0
    /// False: open a fresh connection and close it afterwards (used by the benchmark).
    var reuseConnection = true
    var userAgent = "ferry"
    /// The local address connections leave from (`CURLOPT_INTERFACE` "host!<address>"); nil: the
    /// kernel's choice.
    var sourceAddress: String?
    /// An HTTP proxy URL for this request; "" forces no proxy (not even one from the
    /// environment); nil leaves libcurl's default (the `http_proxy` family of variables).
    var proxy: String?
    /// Told the number of body bytes handed to curl so far, for `.file` uploads.
    var uploadProgress: (@Sendable (UInt64) -> Void)?
    /// The body's length when the caller knows it (a range read): the body then reaches the
    /// handler as one piece (up to `largestPieceBytes`), gathered in a buffer of exactly that
    /// size, which the handler can keep without copying. Nil: pieces of `defaultPieceBytes`.
    var expectedBodyBytes: Int?
    /// Where pieces of a body of unknown length are gathered: buffers the handler's consumers
    /// give back once done with them. Nil: a fresh buffer for every piece.
    var pieceBuffers: PieceBufferPool?
    /// Enough that handing a piece to consumers on other threads costs little beside their work.
    static let defaultPieceBytes = 1 << 20
    /// The largest piece gathered for a body of known length.
    static let largestPieceBytes = 64 << 20
    /// The least rest of a body worth a takeover (which costs the connection).
    static let takeoverMinimumBytes: UInt64 = 4 << 20
}

/// What a finished transfer looked like on the wire.
struct CurlResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    /// The URL of the last request after redirects.
    var effectiveURL: String
    /// The body of a non-2xx response (bounded), for error messages.
    var errorBody: [UInt8]
    /// True when the body handler said it had all it needed and the transfer was cut short.
    var stoppedEarly: Bool
}

/// A transport failure: curl's code and its message (no credentials: headers are never quoted).
struct CurlFailure: Error, Sendable {
    var code: Int
    var message: String

    /// Failures where trying again can help: refused/reset connections, timeouts, truncated bodies.
    var isRetryable: Bool {
        let retryable: [CURLcode] = [CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_OPERATION_TIMEDOUT,
                                     CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE,
                                     CURLE_SSL_CONNECT_ERROR, CURLE_HTTP2, CURLE_HTTP2_STREAM]
        return retryable.contains { Int($0.rawValue) == code }
    }

    /// A body read past curl (a takeover) ended before its Content-Length: retried as curl's own would be.
    static func bodyCutShort(missing: UInt64) -> CurlFailure {
        CurlFailure(code: Int(CURLE_PARTIAL_FILE.rawValue), message: "the connection closed with \(missing) body bytes still to come")
    }

    /// Receiving a body past curl failed (e.g. the connection was reset).
    static func receiveFailed(_ reason: String) -> CurlFailure {
        CurlFailure(code: Int(CURLE_RECV_ERROR.rawValue), message: "receiving the body failed: \(reason)")
    }

    /// No body bytes came for `seconds` (curl's low-speed limit, applied past curl).
    static func stalled(seconds: Int) -> CurlFailure {
        CurlFailure(code: Int(CURLE_OPERATION_TIMEDOUT.rawValue), message: "no data received for \(seconds) s")
    }

    /// True when the connection was never made, so nothing reached the server.
    var isConnectFailure: Bool { code == Int(CURLE_COULDNT_CONNECT.rawValue) || code == Int(CURLE_COULDNT_RESOLVE_HOST.rawValue) }
}

/// Called with each piece of a 2xx response body: the status, the headers, the bytes. Returns
/// false once it has everything it needs (the transfer is then stopped, not failed).
///
/// Pieces are up to `CurlRequestSpec.defaultPieceBytes` long (or the body's expected length):
/// curl's callback sees at most 16 KiB (`CURL_MAX_WRITE_SIZE`), and handing each such piece to a
/// consumer on other threads costs more than the consumer's work (a 200 MB pull made 12,000
/// hand-offs, 36,000 futex calls).
typealias CurlBodyHandler = (Int, HTTPHeaders, ArraySlice<UInt8>) throws -> Bool

/// Reads the rest of a response body from the connection's socket itself, after the body
/// handler got the bytes curl read with the headers: called with the socket and the number of
/// body bytes still to come. Returns false when it took nothing (curl then carries on); after
/// true the transfer ends there and curl closes the connection.
///
/// Offered only where the socket carries the body's bytes as they are: an HTTP/1.x 200 or 206
/// answer over plain TCP (no TLS, no proxy) whose length is its Content-Length (no transfer or content
/// encoding) and whose rest is at least `CurlRequestSpec.takeoverMinimumBytes`. Request specs
/// with a takeover make curl read 16 KiB at a time, so that when the handler has the first
/// piece, curl holds no body bytes it has not delivered.
typealias CurlBodyTakeover = (_ socket: Int32, _ remaining: UInt64) throws -> Bool

/// State shared with curl's C callbacks during one `perform`.
private final class TransferState {
    var status = 0
    var headers = HTTPHeaders()
    /// The blank line after the last response's headers arrived.
    var headersComplete = false
    var errorBody: [UInt8] = []
    var handlerError: (any Error)?
    var stoppedEarly = false
    var body: CurlBodyHandler?
    var upload: CurlUploadBody = .none
    var uploadSent: UInt64 = 0
    var uploadProgress: (@Sendable (UInt64) -> Void)?
    let isCancelled: @Sendable () -> Bool
    var cancelled = false

    init(body: CurlBodyHandler?, upload: CurlUploadBody, expectedBodyBytes: Int?, pieceBuffers: PieceBufferPool?,
         isCancelled: @escaping @Sendable () -> Bool) {
        self.body = body
        self.pieceBuffers = expectedBodyBytes == nil ? pieceBuffers : nil
        self.upload = upload
        if let expected = expectedBodyBytes {
            deliveryBytes = min(max(1, expected), CurlRequestSpec.largestPieceBytes)
            lengthKnown = true
        } else {
            deliveryBytes = pieceBuffers?.pieceBytes ?? CurlRequestSpec.defaultPieceBytes
            lengthKnown = false
        }
        self.isCancelled = isCancelled
    }

    static let maxErrorBody = 64 * 1024
    /// Body bytes gathered before the handler sees them.
    let deliveryBytes: Int
    /// The caller told the body's length: its buffer is reserved whole at the first piece.
    let lengthKnown: Bool
    /// Body bytes received and not yet handed to `body`.
    var staged: [UInt8] = []
    /// Where `staged` comes from for a body of unknown length, when the caller recycles buffers.
    let pieceBuffers: PieceBufferPool?

    /// The caller's takeover of the body, when this request may hand the socket over at all.
    var takeover: CurlBodyTakeover?
    /// True once the current response's first body piece was seen (a takeover is decided then).
    var firstPieceSeen = false
    /// The current response came as HTTP/1.x.
    var httpOne = false
    /// The socket of the transfer's connection, and whether it speaks plain HTTP (no TLS).
    var connectionSocket: () -> Int32? = { nil }
    var plainHTTP: () -> Bool = { false }
}

/// The sockets curl opened through one handle and has not closed yet (curl's open and close
/// callbacks keep it), touched only by the thread using the handle.
private final class SocketLedger {
    var open: Set<Int32> = []
}

extension CurlRequestSpec {
    /// True when the request may go through an HTTP proxy (set here, or from the environment).
    var usesProxy: Bool {
        if let proxy { return !proxy.isEmpty }
        let environment = ProcessInfo.processInfo.environment
        return ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"].contains { !(environment[$0] ?? "").isEmpty }
    }
}

/// One libcurl easy handle. Curl keeps live connections, the DNS cache and TLS sessions in the
/// handle across `curl_easy_reset`, so reusing handles from a pool reuses connections.
///
/// Not thread-safe: a handle is used by one thread at a time (the pool hands it out).
final class CurlEasy: @unchecked Sendable {
    private let handle: UnsafeMutableRawPointer
    private let errorBuffer: UnsafeMutablePointer<CChar>
    /// The sockets curl opened through this handle and has not closed yet.
    private let sockets = SocketLedger()

    init?() {
        guard CurlGlobal.initialized, let h = curl_easy_init() else { return nil }
        handle = h
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }

    /// Performs one request. Transport failures come back as `CurlFailure`; an error thrown by
    /// `body` is rethrown as is; `CancellationError` when `isCancelled` turned true.
    func perform(_ spec: CurlRequestSpec, isCancelled: @escaping @Sendable () -> Bool,
                 body: CurlBodyHandler?, takeover: CurlBodyTakeover? = nil) throws -> CurlResponse {
        curl_easy_reset(handle)
        errorBuffer[0] = 0
        let state = TransferState(body: body, upload: spec.body, expectedBodyBytes: spec.expectedBodyBytes,
                                  pieceBuffers: spec.pieceBuffers, isCancelled: isCancelled)
        state.uploadProgress = spec.uploadProgress
        let takeover = spec.url.lowercased().hasPrefix("http://") && !spec.usesProxy ? takeover : nil
        state.takeover = takeover
        if takeover != nil {
            let handle = self.handle, sockets = self.sockets
            state.plainHTTP = {
                var scheme: UnsafeMutablePointer<CChar>?
                guard cferry_curl_getinfo_str(handle, CURLINFO_SCHEME, &scheme) == CURLE_OK, let scheme else { return false }
                return String(cString: scheme).lowercased() == "http"
            }
            state.connectionSocket = {
                var local = 0, primary = 0
                _ = cferry_curl_getinfo_long(handle, CURLINFO_LOCAL_PORT, &local)
                _ = cferry_curl_getinfo_long(handle, CURLINFO_PRIMARY_PORT, &primary)
                guard local > 0, primary > 0 else { return nil }
                // The one open socket whose two ends are this transfer's connection.
                return sockets.open.first { fd in
                    TCPSocket.ports(of: fd).map { Int($0.local) == local && Int($0.peer) == primary } ?? false
                }
            }
        }
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        for line in spec.headers { headerList = curl_slist_append(headerList, line) }
        // curl adds "Expect: 100-continue" to large uploads; registries answer fine without it.
        headerList = curl_slist_append(headerList, "Expect:")

        // Safe because: `state` outlives the transfer (it is released after curl_easy_perform
        // returns, below), and curl passes this pointer back only during the transfer.
        let statePointer = Unmanaged.passRetained(state).toOpaque()
        defer { Unmanaged<TransferState>.fromOpaque(statePointer).release() }

        var ok = true
        func set(_ code: CURLcode) { if code != CURLE_OK { ok = false } }
        set(cferry_curl_setopt_str(handle, CURLOPT_URL, spec.url))
        set(cferry_curl_setopt_ptr(handle, CURLOPT_ERRORBUFFER, errorBuffer))
        set(cferry_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList))
        set(cferry_curl_setopt_str(handle, CURLOPT_USERAGENT, spec.userAgent))
        set(cferry_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        set(cferry_curl_setopt_long(handle, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS)))
        // 16 KiB (what curl hands a write callback at most) when the body may be taken over.
        set(cferry_curl_setopt_long(handle, CURLOPT_BUFFERSIZE, takeover == nil ? 512 * 1024 : 16 * 1024))
        set(cferry_curl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1))
        set(cferry_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, spec.connectTimeoutMs))
        set(cferry_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, spec.lowSpeedLimit))
        set(cferry_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, spec.lowSpeedTimeSeconds))
        set(cferry_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, spec.totalTimeoutMs))
        set(cferry_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, spec.followRedirects ? 1 : 0))
        set(cferry_curl_setopt_long(handle, CURLOPT_MAXREDIRS, 10))
        // Only http(s), also after redirects.
        set(cferry_curl_setopt_str(handle, CURLOPT_PROTOCOLS_STR, "http,https"))
        set(cferry_curl_setopt_str(handle, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"))
        if !spec.reuseConnection {
            set(cferry_curl_setopt_long(handle, CURLOPT_FRESH_CONNECT, 1))
            set(cferry_curl_setopt_long(handle, CURLOPT_FORBID_REUSE, 1))
        }
        if !spec.verifyTLS {
            set(cferry_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 0))
            set(cferry_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 0))
        }
        if let ca = spec.caCertificatePath { set(cferry_curl_setopt_str(handle, CURLOPT_CAINFO, ca)) }
        if let proxy = spec.proxy { set(cferry_curl_setopt_str(handle, CURLOPT_PROXY, proxy)) }
        if let source = spec.sourceAddress { set(cferry_curl_setopt_str(handle, CURLOPT_INTERFACE, "host!" + source)) }

        // Curl's sockets are made and closed here, so a body takeover can find its connection's.
        let ledgerPointer = Unmanaged.passUnretained(sockets).toOpaque()
        set(cferry_curl_setopt_ptr(handle, CURLOPT_OPENSOCKETDATA, ledgerPointer))
        set(cferry_curl_setopt_opensocket(handle, { user, _, address in
            // Safe because: curl passes the OPENSOCKETDATA pointer (the ledger lives as long as the
            // handle) and the address it is about to connect to.
            guard let user, let address else { return CURL_SOCKET_BAD }
            let fd = socket(address.pointee.family, address.pointee.socktype | Int32(SOCK_CLOEXEC.rawValue), address.pointee.protocol)
            if fd >= 0 { Unmanaged<SocketLedger>.fromOpaque(user).takeUnretainedValue().open.insert(fd) }
            return fd
        }))
        set(cferry_curl_setopt_ptr(handle, CURLOPT_CLOSESOCKETDATA, ledgerPointer))
        set(cferry_curl_setopt_closesocket(handle, { user, fd in
            // Safe because: curl passes the CLOSESOCKETDATA pointer set above.
            if let user { Unmanaged<SocketLedger>.fromOpaque(user).takeUnretainedValue().open.remove(fd) }
            return close(fd)
        }))
        set(cferry_curl_setopt_ptr(handle, CURLOPT_HEADERDATA, statePointer))
        set(cferry_curl_setopt_write(handle, CURLOPT_HEADERFUNCTION, { data, size, count, user in
            // Safe because: curl passes the HEADERDATA pointer set above and `size * count` valid bytes.
            guard let data, let user else { return 0 }
            let state = Unmanaged<TransferState>.fromOpaque(user).takeUnretainedValue()
            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: size * count), as: UTF8.self)
            state.receiveHeaderLine(line)
            return size * count
        }))
        set(cferry_curl_setopt_ptr(handle, CURLOPT_WRITEDATA, statePointer))
        set(cferry_curl_setopt_write(handle, CURLOPT_WRITEFUNCTION, { data, size, count, user in
            // Safe because: curl passes the WRITEDATA pointer set above and `size * count` valid bytes.
            guard let data, let user else { return 0 }
            let state = Unmanaged<TransferState>.fromOpaque(user).takeUnretainedValue()
            return state.receiveBody(UnsafeRawBufferPointer(start: data, count: size * count)) ? size * count : 0
        }))
        set(cferry_curl_setopt_long(handle, CURLOPT_NOPROGRESS, 0))
        set(cferry_curl_setopt_ptr(handle, CURLOPT_XFERINFODATA, statePointer))
        set(cferry_curl_setopt_xferinfo(handle, CURLOPT_XFERINFOFUNCTION, { user, _, _, _, _ in
            // Safe because: curl passes the XFERINFODATA pointer set above.
            guard let user else { return 1 }
            let state = Unmanaged<TransferState>.fromOpaque(user).takeUnretainedValue()
            if state.isCancelled() { state.cancelled = true; return 1 }
            return 0
        }))

        switch spec.method {
        case "GET": set(cferry_curl_setopt_long(handle, CURLOPT_HTTPGET, 1))
        case "HEAD": set(cferry_curl_setopt_long(handle, CURLOPT_NOBODY, 1))
        default: set(cferry_curl_setopt_str(handle, CURLOPT_CUSTOMREQUEST, spec.method))
        }
        switch spec.body {
        case .none:
            if spec.method == "POST" || spec.method == "PUT" || spec.method == "PATCH" {
                set(cferry_curl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, 0))
                set(cferry_curl_setopt_str(handle, CURLOPT_COPYPOSTFIELDS, ""))
            }
        case let .bytes(bytes):
            set(cferry_curl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(bytes.count)))
            bytes.withUnsafeBytes { raw in
                // Safe because: COPYPOSTFIELDS copies POSTFIELDSIZE bytes before returning.
                set(cferry_curl_setopt_ptr(handle, CURLOPT_COPYPOSTFIELDS, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)))
            }
        case let .file(_, _, length):
            set(cferry_curl_setopt_long(handle, CURLOPT_UPLOAD, 1))
            set(cferry_curl_setopt_off(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(length)))
            set(cferry_curl_setopt_long(handle, CURLOPT_UPLOAD_BUFFERSIZE, 1024 * 1024))
            set(cferry_curl_setopt_ptr(handle, CURLOPT_READDATA, statePointer))
            set(cferry_curl_setopt_read(handle, CURLOPT_READFUNCTION, { buffer, size, count, user in
                // Safe because: curl passes the READDATA pointer and a buffer of `size * count` bytes.
                guard let buffer, let user else { return Int(CURL_READFUNC_ABORT) }
                let state = Unmanaged<TransferState>.fromOpaque(user).takeUnretainedValue()
                guard let chunk = state.nextUploadChunk(max: size * count) else { return Int(CURL_READFUNC_ABORT) }
                chunk.withUnsafeBytes { src in
                    // Safe because: chunk.count <= size * count, the capacity curl gave us.
                    if let base = src.baseAddress { UnsafeMutableRawPointer(buffer).copyMemory(from: base, byteCount: src.count) }
                }
                return chunk.count
            }))
        }
        guard ok else { throw CurlFailure(code: Int(CURLE_BAD_FUNCTION_ARGUMENT.rawValue), message: "libcurl rejected an option (is libcurl too old?)") }

        let code = curl_easy_perform(handle)
        // What arrived is handed over even when the transfer then failed: a retry resumes after it.
        if !state.cancelled { state.deliverStaged() }
        if state.cancelled { throw CancellationError() }
        if let error = state.handlerError { throw error }
        // An error answer whose body was cut short still carries its status: distribution 2.8
        // answers an unsatisfiable Range with 416 and the blob's Content-Length, then closes
        // after a 33-byte message. Retrying that as a transport failure would only repeat it.
        let truncatedErrorAnswer = (code == CURLE_PARTIAL_FILE || code == CURLE_RECV_ERROR)
            && state.headersComplete && state.status >= 400
        if code != CURLE_OK && !(state.stoppedEarly && code == CURLE_WRITE_ERROR) && !truncatedErrorAnswer {
            var message = String(cString: errorBuffer)
            if message.isEmpty { message = String(cString: curl_easy_strerror(code)) }
            throw CurlFailure(code: Int(code.rawValue), message: message)
        }
        var effective: UnsafeMutablePointer<CChar>?
        _ = cferry_curl_getinfo_str(handle, CURLINFO_EFFECTIVE_URL, &effective)
        let effectiveURL = effective.map { String(cString: $0) } ?? spec.url
        var status = 0
        _ = cferry_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        if status == 0 { status = state.status }
        return CurlResponse(status: status, headers: state.headers, effectiveURL: effectiveURL,
                            errorBody: state.errorBody, stoppedEarly: state.stoppedEarly)
    }
}

extension TransferState {
    func receiveHeaderLine(_ raw: String) {
        let line = raw.trimmingCharacters(in: ["\r", "\n"])
        if line.hasPrefix("HTTP/") {
            // A new response (after a redirect or "100 Continue"): start over.
            deliverStaged()
            headers = HTTPHeaders()
            headersComplete = false
            firstPieceSeen = false
            httpOne = line.hasPrefix("HTTP/1.")
            let parts = line.split(separator: " ", maxSplits: 2)
            status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        } else if line.isEmpty {
            headersComplete = true
        } else if let colon = line.firstIndex(of: ":") {
            let name = line[..<colon].trimmingCharacters(in: [" ", "\t"])
            let value = line[line.index(after: colon)...].trimmingCharacters(in: [" ", "\t"])
            headers.append(name: name, value: value)
        }
    }

    /// Returns false to make curl stop (early finish or a handler error).
    func receiveBody(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard (200..<300).contains(status), body != nil else {
            if errorBody.count < Self.maxErrorBody { errorBody += bytes.prefix(Self.maxErrorBody - errorBody.count) }
            return true
        }
        guard !stoppedEarly, handlerError == nil else { return false }
        if takeover != nil && !firstPieceSeen {
            firstPieceSeen = true
            if let remaining = takeoverRemaining(after: bytes.count) { return takeOver(first: bytes, remaining: remaining) }
        }
        // A delivery never outgrows its buffer: a piece that would not fit sends what is staged first.
        if !staged.isEmpty && staged.count + bytes.count > deliveryBytes {
            guard deliverStaged() else { return false }
        }
        stage(bytes)
        return staged.count < deliveryBytes || deliverStaged()
    }

    /// Adds body bytes to `staged`. An empty `staged` is first given a buffer the caller's
    /// consumers gave back, or else (a known length, or a full first piece of a long body) room
    /// for exactly one delivery: every buffer then asks malloc for the same size, so a freed one
    /// is reused for the next (glibc serves a repeated size from its heap after the first free)
    /// instead of mapping and faulting in fresh pages.
    private func stage(_ bytes: UnsafeRawBufferPointer) {
        if staged.isEmpty {
            if let pieceBuffers {
                staged = pieceBuffers.take()
            } else if lengthKnown || bytes.count >= 16 * 1024 {
                staged.reserveCapacity(deliveryBytes)
            }
        }
        staged.append(contentsOf: bytes)
    }

    /// The body bytes still to come after a first piece of `count`, when this answer's body can
    /// be taken over (see `CurlBodyTakeover`); nil otherwise.
    func takeoverRemaining(after count: Int) -> UInt64? {
        guard status == 200 || status == 206, httpOne, headers["transfer-encoding"] == nil,
              headers["content-encoding"].map({ $0.lowercased() == "identity" }) ?? true,
              let length = headers["content-length"].flatMap({ UInt64($0) }), length >= UInt64(count),
              length - UInt64(count) >= CurlRequestSpec.takeoverMinimumBytes, plainHTTP() else { return nil }
        return length - UInt64(count)
    }

    /// Delivers the first piece, then lets the caller read the rest from the socket. Returns
    /// what curl's write callback should: false ends the transfer (taken over, or failed).
    func takeOver(first bytes: UnsafeRawBufferPointer, remaining: UInt64) -> Bool {
        stage(bytes)
        guard deliverStaged() else { return false }
        guard let takeover, let socket = connectionSocket() else { return true }
        do {
            guard try takeover(socket, remaining) else { return true }
            stoppedEarly = true
        } catch {
            handlerError = error
        }
        return false
    }

    /// Hands the staged body bytes to the handler; false when it stopped or failed.
    @discardableResult
    func deliverStaged() -> Bool {
        guard !staged.isEmpty, !stoppedEarly, handlerError == nil, let body else { return !stoppedEarly && handlerError == nil }
        // A handler that keeps the bytes (to write or hash them on other threads) keeps the
        // buffer; the next pieces then go into a fresh one of the standard size, not one sized
        // from this buffer's capacity (which malloc rounds up, a page more every time).
        defer { staged = [] }
        do {
            if try body(status, headers, staged[...]) { return true }
            stoppedEarly = true
            return false
        } catch {
            handlerError = error
            return false
        }
    }

    /// The next piece of a file upload, or nil on a read error (which aborts the transfer).
    func nextUploadChunk(max: Int) -> [UInt8]? {
        guard case let .file(fd, offset, length) = upload else { return [] }
        let remaining = length - uploadSent
        if remaining == 0 { return [] }
        do {
            let chunk = try fd.read(at: offset + uploadSent, count: Int(min(UInt64(max), remaining)))
            if chunk.isEmpty { handlerError = RegistryError.io(path: fd.name, reason: "file ended early"); return nil }
            uploadSent += UInt64(chunk.count)
            uploadProgress?(uploadSent)
            return chunk
        } catch {
            handlerError = error
            return nil
        }
    }
}
