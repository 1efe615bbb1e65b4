@testable import Registry
import Testing

/// The retry policy's delays (no server, no clock: only the values it picks).
@Suite struct RetryPolicyTests {
    @Test func backoffIsFullJitterUnderAnExponentialCap() {
        let policy = RetryPolicy(maxAttempts: 8, baseDelay: .milliseconds(100), maxDelay: .seconds(1))
        for retry in 0..<8 {
            let cap = min(1000, 100 << retry)
            let delays = (0..<200).map { _ in policy.delay(beforeRetry: retry, retryAfterSeconds: nil) }
            #expect(delays.allSatisfy { $0 >= .zero && $0 <= .milliseconds(cap) }, "retry \(retry)")
            // Jittered: not one fixed value.
            #expect(Set(delays).count > 1, "retry \(retry)")
        }
    }

    @Test func retryAfterIsHonouredUpToItsCap() {
        let policy = RetryPolicy(maxRetryAfter: .seconds(30))
        #expect(policy.delay(beforeRetry: 0, retryAfterSeconds: 3) == .seconds(3))
        #expect(policy.delay(beforeRetry: 4, retryAfterSeconds: 600) == .seconds(30))
    }

    @Test(arguments: [
        (408, true), (429, true), (500, true), (502, true), (503, true), (504, true),
        (501, false), (505, false), (400, false), (401, false), (404, false), (416, false),
    ])
    func retryableStatuses(status: Int, retryable: Bool) {
        #expect(isRetryableStatus(status) == retryable)
    }
}
