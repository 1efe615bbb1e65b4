import Foundation

/// Response headers in arrival order; names compare case-insensitively.
struct HTTPHeaders: Sendable {
    private var fields: [(name: String, value: String)] = []

    mutating func append(name: String, value: String) { fields.append((name.lowercased(), value)) }

    /// The first value of `name`.
    subscript(name: String) -> String? {
        let key = name.lowercased()
        return fields.first { $0.name == key }?.value
    }

    /// Every value of `name` (e.g. several WWW-Authenticate lines).
    func values(_ name: String) -> [String] {
        let key = name.lowercased()
        return fields.filter { $0.name == key }.map(\.value)
    }
}

/// A `Content-Range: bytes a-b/total` header (RFC 9110 §14.4).
struct ContentRange: Equatable, Sendable {
    var first: UInt64
    var last: UInt64
    var total: UInt64?

    init?(header: String) {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard text.hasPrefix("bytes ") else { return nil }
        let spec = text.dropFirst(6)
        let halves = spec.split(separator: "/", maxSplits: 1)
        guard halves.count == 2 else { return nil }
        let bounds = halves[0].split(separator: "-", maxSplits: 1)
        guard bounds.count == 2, let a = UInt64(bounds[0]), let b = UInt64(bounds[1]), a <= b else { return nil }
        first = a
        last = b
        total = halves[1] == "*" ? nil : UInt64(halves[1])
    }
}

extension ContentRange {
    /// The complete length in an unsatisfied-range answer, `bytes */LENGTH` (RFC 9110 §14.4).
    static func unsatisfiedLength(header: String) -> UInt64? {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard text.hasPrefix("bytes */") else { return nil }
        return UInt64(text.dropFirst(8))
    }
}

/// Resolves a `Location` header against the URL it came with (absolute, or absolute path).
func resolveLocation(_ location: String, against base: String) -> String {
    if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
    guard let schemeEnd = base.range(of: "://") else { return location }
    let afterScheme = base[schemeEnd.upperBound...]
    let authorityEnd = afterScheme.firstIndex(of: "/") ?? afterScheme.endIndex
    let origin = String(base[..<authorityEnd])
    if location.hasPrefix("/") { return origin + location }
    // Relative to the base's directory.
    let path = base[..<(base.firstIndex(of: "?") ?? base.endIndex)]
    if let slash = path.lastIndex(of: "/"), slash >= authorityEnd { return String(path[...slash]) + location }
    return origin + "/" + location
}

/// Appends one query parameter, percent-encoding the value.
func appendingQuery(_ url: String, _ name: String, _ value: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    let encoded = value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    return url + (url.contains("?") ? "&" : "?") + name + "=" + encoded
}

/// Percent-encodes a form or query value (RFC 3986 unreserved characters stay).
func formEncoded(_ value: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
}
