import Foundation

/// When a pre-signed storage URL (what registries on S3, GCS or Azure redirect blob GETs to)
/// stops working, read from its query; nil when it carries no recognised expiry.
///
/// - S3 SigV4 and GCS V4: `X-Amz-Date`/`X-Goog-Date` (`yyyyMMdd'T'HHmmss'Z'`) plus
///   `X-Amz-Expires`/`X-Goog-Expires` seconds.
/// - S3 SigV2, GCS V2, CloudFront: `Expires` as Unix seconds.
/// - Azure SAS: `se` as ISO 8601 (`2024-01-01T00:00:00Z`).
func signedURLExpiry(_ url: String) -> Date? {
    guard let query = url.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
    var fields: [String: String] = [:]
    for pair in query.split(separator: "&") {
        let parts = pair.split(separator: "=", maxSplits: 1)
        guard parts.count == 2 else { continue }
        fields[String(parts[0]).lowercased()] = String(parts[1]).removingPercentEncoding ?? String(parts[1])
    }
    for prefix in ["x-amz-", "x-goog-"] {
        if let date = fields[prefix + "date"].flatMap(parseCompactUTC), let seconds = fields[prefix + "expires"].flatMap(Double.init) {
            return date.addingTimeInterval(seconds)
        }
    }
    if let epoch = fields["expires"].flatMap(Double.init) { return Date(timeIntervalSince1970: epoch) }
    if let se = fields["se"] { return ISO8601DateFormatter().date(from: se) }
    return nil
}

/// `20240101T120000Z` (the SigV4 timestamp form).
private func parseCompactUTC(_ text: String) -> Date? {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
    return formatter.date(from: text)
}

extension RegistryOptions {
    /// How long to reuse a redirect target: `redirectCacheLifetime`, shortened to end a little
    /// (a tenth of the remaining time, at most 30 s) before a signed URL's own expiry.
    func redirectLifetime(for url: String, now: Date = Date()) -> Duration {
        guard let expiry = signedURLExpiry(url) else { return redirectCacheLifetime }
        let remaining = expiry.timeIntervalSince(now)
        let usable = remaining - min(30, remaining / 10)
        guard usable > 0 else { return .zero }
        return min(redirectCacheLifetime, .milliseconds(Int64(usable * 1000)))
    }
}
