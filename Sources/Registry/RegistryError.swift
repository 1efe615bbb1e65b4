public import OCI

/// What a registry operation was about: the registry host, the repository and the object
/// (e.g. "blob sha256:…", "manifest latest"), so that every error names all three.
public struct RegistryTarget: Sendable, Hashable, CustomStringConvertible {
    public var registry: String
    public var repository: String
    public var object: String

    public init(registry: String, repository: String, object: String) {
        self.registry = registry
        self.repository = repository
        self.object = object
    }

    public var description: String { "\(object) in \(registry)/\(repository)" }
}

/// Everything that can go wrong talking to a registry.
///
/// Descriptions name the registry, repository and object, plus the HTTP status or transport
/// cause. Credentials and tokens never appear in them.
public enum RegistryError: Error, Sendable, CustomStringConvertible {
    /// The registry could not be reached or the connection failed, after all retries.
    case unreachable(RegistryTarget, url: String, attempts: Int, reason: String)
    /// The registry answered with an unexpected HTTP status; `message` is its error text, if any.
    case httpStatus(RegistryTarget, status: Int, message: String)
    /// The object does not exist (404).
    case notFound(RegistryTarget)
    /// The registry refused our credentials or token (401/403), or asked for credentials we lack.
    case unauthorized(RegistryTarget, status: Int, reason: String)
    /// The token service failed to issue a token.
    case tokenService(realm: String, status: Int?, reason: String)
    /// The bytes received do not hash to the digest they were asked for.
    case digestMismatch(RegistryTarget, expected: Digest, actual: Digest)
    /// The object's size differs from the size the descriptor promised.
    case sizeMismatch(RegistryTarget, expected: Int64, actual: Int64)
    /// A range read asked for bytes past the end of the blob: `status` 416, or a short 200/206
    /// answer; `blobSize` is the size the registry reported, when it did.
    case rangeNotSatisfiable(RegistryTarget, range: Range<UInt64>, blobSize: UInt64?, status: Int)
    /// The server ignored `Range` (answered 200 with the whole blob) and the range starts
    /// further in than `RegistryOptions.maxSkippedPrefix` allows downloading to reach it.
    case rangeIgnored(RegistryTarget, range: Range<UInt64>, limit: UInt64)
    /// The registry's answer is malformed (bad JSON, bad Content-Range, missing Location…).
    case invalidResponse(RegistryTarget, reason: String)
    /// The manifest has a media type Ferry cannot use (e.g. Docker schema 1).
    case unsupportedMediaType(RegistryTarget, mediaType: String)
    /// The index lists no image for the requested platform.
    case noMatchingPlatform(RegistryTarget, requested: Platform, available: [Platform])
    /// A credentials file could not be read or parsed.
    case credentialsFile(path: String, reason: String)
    /// A local file could not be read or written.
    case io(path: String, reason: String)
    /// Every mirror and then the origin failed; `errors` are in the order tried, origin last.
    case allSourcesFailed(RegistryTarget, errors: [RegistryError])

    public var description: String {
        switch self {
        case let .unreachable(target, url, attempts, reason):
            return "\(target): cannot reach \(url) (\(attempts) attempt\(attempts == 1 ? "" : "s")): \(reason)"
        case let .httpStatus(target, status, message):
            return "\(target): registry answered HTTP \(status)" + (message.isEmpty ? "" : ": \(message)")
        case let .notFound(target):
            return "\(target): not found (HTTP 404)"
        case let .unauthorized(target, status, reason):
            return "\(target): access denied (HTTP \(status)): \(reason)"
        case let .tokenService(realm, status, reason):
            return "token service \(realm)" + (status.map { " answered HTTP \($0)" } ?? " failed") + ": \(reason)"
        case let .digestMismatch(target, expected, actual):
            return "\(target): content does not match its digest: expected \(expected), got \(actual)"
        case let .sizeMismatch(target, expected, actual):
            return "\(target): size mismatch: expected \(expected) bytes, got \(actual)"
        case let .rangeNotSatisfiable(target, range, size, status):
            return "\(target): bytes \(range.lowerBound)..<\(range.upperBound) lie beyond the end of the blob"
                + (size.map { " (\($0) bytes)" } ?? "") + " (HTTP \(status))"
        case let .rangeIgnored(target, range, limit):
            return "\(target): the server ignores Range requests (answered 200 with the whole blob); reaching offset "
                + "\(range.lowerBound) would download more than the \(limit)-byte limit"
        case let .invalidResponse(target, reason):
            return "\(target): invalid response from registry: \(reason)"
        case let .unsupportedMediaType(target, mediaType):
            return "\(target): unsupported media type \"\(mediaType)\""
        case let .noMatchingPlatform(target, requested, available):
            return "\(target): no image for platform \(requested) (available: \(available.map(\.description).joined(separator: ", ")))"
        case let .credentialsFile(path, reason):
            return "credentials file \(path): \(reason)"
        case let .io(path, reason):
            return "\(path): \(reason)"
        case let .allSourcesFailed(target, errors):
            return "\(target): every source failed: " + errors.map(\.description).joined(separator: "; then ")
        }
    }

    /// The same error, naming `host` (a mirror that was asked instead of the registry) as its
    /// registry.
    func via(_ host: String) -> RegistryError {
        func moved(_ target: RegistryTarget) -> RegistryTarget {
            RegistryTarget(registry: host, repository: target.repository, object: target.object)
        }
        switch self {
        case let .unreachable(t, url, attempts, reason): return .unreachable(moved(t), url: url, attempts: attempts, reason: reason)
        case let .httpStatus(t, status, message): return .httpStatus(moved(t), status: status, message: message)
        case let .notFound(t): return .notFound(moved(t))
        case let .unauthorized(t, status, reason): return .unauthorized(moved(t), status: status, reason: reason)
        case let .digestMismatch(t, expected, actual): return .digestMismatch(moved(t), expected: expected, actual: actual)
        case let .sizeMismatch(t, expected, actual): return .sizeMismatch(moved(t), expected: expected, actual: actual)
        case let .rangeNotSatisfiable(t, range, size, status): return .rangeNotSatisfiable(moved(t), range: range, blobSize: size, status: status)
        case let .rangeIgnored(t, range, limit): return .rangeIgnored(moved(t), range: range, limit: limit)
        case let .invalidResponse(t, reason): return .invalidResponse(moved(t), reason: reason)
        case let .unsupportedMediaType(t, mediaType): return .unsupportedMediaType(moved(t), mediaType: mediaType)
        case let .noMatchingPlatform(t, requested, available): return .noMatchingPlatform(moved(t), requested: requested, available: available)
        case let .allSourcesFailed(t, errors): return .allSourcesFailed(moved(t), errors: errors)
        case .tokenService, .credentialsFile, .io: return self
        }
    }

    /// The HTTP status behind this error, when there was one.
    public var httpStatus: Int? {
        switch self {
        case let .httpStatus(_, status, _), let .unauthorized(_, status, _): return status
        case .notFound: return 404
        case let .rangeNotSatisfiable(_, _, _, status): return status
        case let .tokenService(_, status, _): return status
        case let .allSourcesFailed(_, errors): return errors.last?.httpStatus
        default: return nil
        }
    }
}
