import Foundation
@testable import Registry
import Testing

/// Expiry of pre-signed storage URLs, read from their query (no server needed).
@Suite struct SignedURLTests {
    @Test(arguments: [
        (
            "https://b.s3.amazonaws.com/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20240101T120000Z&X-Amz-Expires=1200&X-Amz-Signature=ab",
            1_704_110_400.0 + 1200
        ),
        ("https://storage.googleapis.com/b/x?X-Goog-Date=20240101T120000Z&X-Goog-Expires=900&X-Goog-Signature=cd", 1_704_110_400.0 + 900),
        ("https://b.s3.amazonaws.com/x?AWSAccessKeyId=K&Expires=1704110400&Signature=ef", 1_704_110_400.0),
        ("https://a.blob.core.windows.net/c/x?sv=2021-08-06&se=2024-01-01T12%3A00%3A00Z&sig=gh", 1_704_110_400.0),
    ])
    func expiryIsReadFromTheQuery(url: String, expected: Double) {
        #expect(signedURLExpiry(url)?.timeIntervalSince1970 == expected)
    }

    @Test func urlsWithoutAnExpiryKeepTheConfiguredLifetime() {
        let options = RegistryOptions(redirectCacheLifetime: .seconds(60))
        #expect(signedURLExpiry("https://cdn.example/blob?token=abc") == nil)
        #expect(options.redirectLifetime(for: "https://cdn.example/blob") == .seconds(60))
    }

    @Test func theLifetimeEndsBeforeTheURLDoes() {
        let now = Date(timeIntervalSince1970: 1_704_110_400)
        let options = RegistryOptions(redirectCacheLifetime: .seconds(600))
        // 100 s left: reused for 90 s.
        #expect(options.redirectLifetime(for: "https://s/x?Expires=1704110500", now: now) == .seconds(90))
        // An hour left: capped by the configured lifetime.
        #expect(options.redirectLifetime(for: "https://s/x?Expires=1704114000", now: now) == .seconds(600))
        // Already expired: not reused at all.
        #expect(options.redirectLifetime(for: "https://s/x?Expires=1704110000", now: now) == .zero)
    }
}
