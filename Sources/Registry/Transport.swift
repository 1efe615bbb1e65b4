import Foundation
import FerrySystem
import Synchronization

/// A cancellation signal that a blocking transfer polls (from curl's progress callback).
final class CancellationFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func cancel() { flag.store(true, ordering: .relaxed) }
    var isCancelled: Bool { flag.load(ordering: .relaxed) }
    func check() throws { if isCancelled { throw CancellationError() } }
}

/// Reusable curl handles. A handle keeps its connections, DNS entries and TLS sessions between
/// requests, so taking the most recently returned one reuses a warm connection.
final class HandlePool: Sendable {
    private let idle = Mutex<[CurlEasy]>([])
    private let limit: Int

    init(limit: Int = 32) { self.limit = limit }

    func withHandle<T>(_ body: (CurlEasy) throws -> T) throws -> T {
        let handle: CurlEasy
        if let reused = idle.withLock({ $0.popLast() }) {
            handle = reused
        } else if let fresh = CurlEasy() {
            handle = fresh
        } else {
            throw CurlFailure(code: -1, message: "libcurl could not create a handle")
        }
        defer { idle.withLock { if $0.count < limit { $0.append(handle) } } }
        return try body(handle)
    }
}

/// The result of one attempt inside `withRetries`.
enum AttemptOutcome<T> {
    case done(T)
    /// Try again (after `retryAfterSeconds` if the server said so); `error` is thrown if no tries remain.
    case retry(RegistryError, retryAfterSeconds: Int?)
}

/// Runs `body` up to `policy.maxAttempts` times with jittered exponential backoff between tries.
func withRetries<T>(_ policy: RetryPolicy, cancel: CancellationFlag, _ body: (_ attempt: Int) throws -> AttemptOutcome<T>) throws -> T {
    var retryAfter: Int?
    var lastError: RegistryError?
    for attempt in 0..<policy.maxAttempts {
        if attempt > 0 { try sleep(policy.delay(beforeRetry: attempt - 1, retryAfterSeconds: retryAfter), cancel: cancel) }
        try cancel.check()
        switch try body(attempt) {
        case let .done(value): return value
        case let .retry(error, after):
            lastError = error
            retryAfter = after
        }
    }
    // maxAttempts >= 1, so an error was recorded.
    throw lastError ?? RegistryError.io(path: "", reason: "no attempt made")
}

/// Sleeps in short steps so that cancellation is noticed quickly.
func sleep(_ duration: Duration, cancel: CancellationFlag) throws {
    let deadline = ContinuousClock.now + duration
    while ContinuousClock.now < deadline {
        try cancel.check()
        let left = deadline - ContinuousClock.now
        Thread.sleep(forTimeInterval: min(0.02, Double(max(0, left.milliseconds)) / 1000))
    }
}

/// Whether an HTTP status is worth retrying: 408, 429 and 5xx except 501/505.
func isRetryableStatus(_ status: Int) -> Bool {
    status == 408 || status == 429 || (500...599).contains(status) && status != 501 && status != 505
}

/// `Retry-After` in seconds (the delta-seconds form; an HTTP-date is treated as "soon").
func retryAfterSeconds(_ headers: HTTPHeaders) -> Int? {
    guard let value = headers["retry-after"]?.trimmingCharacters(in: .whitespaces) else { return nil }
    return Int(value) ?? 1
}

/// Runs blocking work on a thread of `BlockingThreadPool` (outside Swift's cooperative pool and
/// libdispatch's root queues, so a transfer a slow server holds up never takes a thread async
/// tasks need); task cancellation sets the flag the work polls (curl's progress callback aborts
/// the transfer).
func offload<T: Sendable>(_ body: @escaping @Sendable (CancellationFlag) throws -> T) async throws -> T {
    let flag = CancellationFlag()
    return try await withTaskCancellationHandler {
        try await BlockingThreadPool.shared.run { try body(flag) }
    } onCancel: {
        flag.cancel()
    }
}

extension RegistryOptions {
    /// A curl request with this configuration's TLS, timeout and connection settings.
    func requestSpec(method: String, url: String, headers: [String] = [], body: CurlUploadBody = .none,
                     timeout: Duration? = nil) -> CurlRequestSpec {
        var spec = CurlRequestSpec(method: method, url: url, headers: headers, body: body)
        spec.verifyTLS = !insecureHosts.contains(Self.authority(of: url))
        spec.caCertificatePath = caCertificatePath
        spec.connectTimeoutMs = max(1, connectTimeout.milliseconds)
        spec.lowSpeedLimit = lowSpeedLimit
        spec.lowSpeedTimeSeconds = max(1, lowSpeedTime.milliseconds / 1000)
        spec.totalTimeoutMs = timeout.map { max(1, $0.milliseconds) } ?? 0
        spec.reuseConnection = reuseConnections
        spec.userAgent = userAgent
        return spec
    }

    /// "host:port" of a URL.
    static func authority(of url: String) -> String {
        var rest = Substring(url)
        if let r = rest.range(of: "://") { rest = rest[r.upperBound...] }
        if let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) { rest = rest[..<end] }
        return String(rest)
    }
}
