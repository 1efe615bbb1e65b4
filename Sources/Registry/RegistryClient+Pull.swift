public import OCI
import FerrySystem
import Foundation
import Logging
import Synchronization

/// A manifest or index as the registry served it, verified against its digest.
public struct FetchedManifest: Sendable {
    public var bytes: [UInt8]
    public var mediaType: String
    public var digest: Digest
}

/// An image manifest chosen for a platform.
public struct ResolvedManifest: Sendable {
    public var manifest: Manifest
    /// The manifest's bytes exactly as served (their sha256 is `digest`).
    public var bytes: [UInt8]
    public var digest: Digest
    public var mediaType: String
    /// The index (or manifest list) the manifest was picked from, if the reference named one.
    public var indexDigest: Digest?
}

extension RegistryClient {
    /// The `Accept` list for manifests: OCI manifest and index, Docker schema 2 manifest and list.
    static let manifestAccept = "Accept: " + [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest,
                                              MediaType.dockerManifestList].joined(separator: ", ")
    /// Manifests larger than this are refused (the distribution spec suggests 4 MiB).
    static let maxManifestSize = 4 << 20

    /// Fetches the manifest or index named by `reference` (a tag or digest; default: the
    /// reference's own) and verifies its digest.
    public func fetchManifest(_ ref: RegistryReference, reference: String? = nil) async throws -> FetchedManifest {
        try await offload { cancel in try self.fetchManifestBlocking(ref, reference: reference ?? ref.manifestReference, cancel: cancel) }
    }

    /// Resolves a reference to an image manifest: follows an index / manifest list to the entry
    /// for `platform`, verifying every digest and size on the way.
    public func resolveManifest(_ ref: RegistryReference, platform: Platform = .current) async throws -> ResolvedManifest {
        try await offload { cancel in
            let top = try self.fetchManifestBlocking(ref, reference: ref.manifestReference, cancel: cancel)
            let target = RegistryTarget(registry: ref.host, repository: ref.repository, object: "manifest \(ref.manifestReference)")
            switch top.mediaType {
            case MediaType.ociIndex, MediaType.dockerManifestList:
                let index = try decode(Index.self, top.bytes, target)
                let entry = try Self.select(platform, from: index, target: target)
                let child = try self.fetchManifestBlocking(ref, reference: entry.digest.description, cancel: cancel)
                let childTarget = RegistryTarget(registry: ref.host, repository: ref.repository, object: "manifest \(entry.digest)")
                guard Int64(child.bytes.count) == entry.size else {
                    throw RegistryError.sizeMismatch(childTarget, expected: entry.size, actual: Int64(child.bytes.count))
                }
                guard child.mediaType == MediaType.ociManifest || child.mediaType == MediaType.dockerManifest else {
                    throw RegistryError.unsupportedMediaType(childTarget, mediaType: child.mediaType)
                }
                return ResolvedManifest(manifest: try decode(Manifest.self, child.bytes, childTarget), bytes: child.bytes,
                                        digest: child.digest, mediaType: child.mediaType, indexDigest: top.digest)
            case MediaType.ociManifest, MediaType.dockerManifest:
                return ResolvedManifest(manifest: try decode(Manifest.self, top.bytes, target), bytes: top.bytes,
                                        digest: top.digest, mediaType: top.mediaType, indexDigest: nil)
            default:
                throw RegistryError.unsupportedMediaType(target, mediaType: top.mediaType)
            }
        }
    }

    /// The image configuration blob of `manifest`, verified.
    public func fetchConfig(_ ref: RegistryReference, manifest: Manifest) async throws -> [UInt8] {
        try await fetchBlobBytes(ref, digest: manifest.config.digest, expectedSize: manifest.config.size)
    }

    /// A whole blob in memory (configs, bootstraps), verified; refuses blobs over `maxSize`.
    public func fetchBlobBytes(_ ref: RegistryReference, digest: Digest, expectedSize: Int64? = nil,
                               maxSize: Int = 256 << 20) async throws -> [UInt8] {
        try await offload { cancel in
            let target = RegistryTarget(registry: ref.host, repository: ref.repository, object: "blob \(digest)")
            return try self.withPullSources(ref, object: target.object) { host, policy in
                var bytes: [UInt8] = []
                let call = Call(target: target, host: host, scopes: [Authenticator.scope(repository: ref.repository, push: false)],
                                method: "GET", url: self.url(host: host, ref.repository, "blobs/\(digest)"), policy: policy)
                let response = try self.send(call, cancel: cancel) {
                    bytes.removeAll(keepingCapacity: true)
                    return ([], { _, _, chunk in
                        bytes += chunk
                        if bytes.count > maxSize {
                            throw RegistryError.invalidResponse(target, reason: "blob is larger than \(maxSize) bytes")
                        }
                        return true
                    })
                }
                try self.expect(response, [200], call)
                if let expectedSize, Int64(bytes.count) != expectedSize {
                    throw RegistryError.sizeMismatch(target, expected: expectedSize, actual: Int64(bytes.count))
                }
                try verify(digest, actual: try sha256Digest(bytes, target), target)
                return bytes
            }
        }
    }

    /// Streams a blob into the file at `path` (created or truncated) with bounded memory,
    /// resuming interrupted transfers with a Range request, and verifies size and digest. On a
    /// mismatch the file is removed. Returns the number of bytes written.
    @discardableResult
    public func fetchBlob(_ ref: RegistryReference, digest: Digest, to path: String, expectedSize: Int64? = nil,
                          progress: (@Sendable (UInt64) -> Void)? = nil) async throws -> UInt64 {
        try await offload { cancel in
            try self.fetchBlobBlocking(ref, digest: digest, to: path, expectedSize: expectedSize, progress: progress, cancel: cancel)
        }
    }

    /// Reads exactly the bytes `range` of a blob (a `Range` request; a server that ignores
    /// Range and answers 200 is handled by skipping, up to `options.maxSkippedPrefix`). A range
    /// past the end of the blob throws `RegistryError.rangeNotSatisfiable`. Reuses a storage-backend redirect from an
    /// earlier read until it expires or fails. `timeout` bounds the whole request (default:
    /// `options.rangeRequestTimeout`).
    public func readRange(_ ref: RegistryReference, digest: Digest, range: Range<UInt64>,
                          timeout: Duration? = nil) async throws -> [UInt8] {
        try await offload { cancel in
            try self.readRangeBlocking(ref, digest: digest, range: range, timeout: timeout ?? self.options.rangeRequestTimeout, cancel: cancel)
        }
    }

    // MARK: Blocking implementations

    func fetchManifestBlocking(_ ref: RegistryReference, reference: String, cancel: CancellationFlag) throws -> FetchedManifest {
        let target = RegistryTarget(registry: ref.host, repository: ref.repository, object: "manifest \(reference)")
        return try withPullSources(ref, object: target.object) { host, policy in
            var bytes: [UInt8] = []
            let call = Call(target: target, host: host, scopes: [Authenticator.scope(repository: ref.repository, push: false)],
                            method: "GET", url: url(host: host, ref.repository, "manifests/\(reference)"),
                            headers: [Self.manifestAccept], policy: policy)
            let response = try send(call, cancel: cancel) {
                bytes.removeAll(keepingCapacity: true)
                return ([], { _, _, chunk in
                    bytes += chunk
                    if bytes.count > Self.maxManifestSize {
                        throw RegistryError.invalidResponse(target, reason: "manifest is larger than \(Self.maxManifestSize) bytes")
                    }
                    return true
                })
            }
            try expect(response, [200], call)
            let actual = try sha256Digest(bytes, target)
            if reference.contains(":") {
                let expected = try parseDigest(reference, target)
                try verify(expected, actual: actual, target)
            } else if let header = response.headers["docker-content-digest"], let served = try? Digest(parsing: header),
                      served.algorithm == "sha256" {
                try verify(served, actual: actual, target)
            }
            return FetchedManifest(bytes: bytes, mediaType: try manifestMediaType(response.headers, bytes, target), digest: actual)
        }
    }

    func fetchBlobBlocking(_ ref: RegistryReference, digest: Digest, to path: String, expectedSize: Int64?,
                           progress: (@Sendable (UInt64) -> Void)?, cancel: CancellationFlag) throws -> UInt64 {
        let target = RegistryTarget(registry: ref.host, repository: ref.repository, object: "blob \(digest)")
        guard digest.algorithm == "sha256" else { throw RegistryError.invalidResponse(target, reason: "only sha256 blobs can be verified") }
        report(.pull, ref, digest, .started(total: expectedSize.map { UInt64(max(0, $0)) }))
        do {
            let written = try fetchBlobAttempts(ref, digest: digest, to: path, expectedSize: expectedSize, progress: progress,
                                                target: target, cancel: cancel)
            report(.pull, ref, digest, .finished(bytes: written, skipped: false))
            return written
        } catch {
            // Whatever failed (status, transport, digest), no partial or wrong blob stays behind.
            unlink(path)
            report(.pull, ref, digest, .failed)
            throw error
        }
    }

    private func fetchBlobAttempts(_ ref: RegistryReference, digest: Digest, to path: String, expectedSize: Int64?,
                                   progress: (@Sendable (UInt64) -> Void)?, target: RegistryTarget,
                                   cancel: CancellationFlag) throws -> UInt64 {
        try withPullSources(ref, object: target.object) { host, policy in
            let splice = options.spliceBlobBodies && !spliceRefused.withLock { $0 }
            var spliced = false
            do {
                return try fetchBlobFrom(host, ref, digest: digest, to: path, expectedSize: expectedSize, progress: progress,
                                         target: target, policy: policy, splice: splice, spliced: &spliced, cancel: cancel)
            } catch let error as RegistryError where spliced {
                guard case .digestMismatch = error else { throw error }
                // Bytes read past libcurl did not verify: this libcurl may keep body bytes the
                // takeover cannot see. Never splice again in this process; fetch through curl.
                spliceRefused.withLock { $0 = true }
                logger.warning("blob \(digest) from \(host): the body read straight from the socket did not verify (\(error)); reading bodies through libcurl from now on")
                return try fetchBlobFrom(host, ref, digest: digest, to: path, expectedSize: expectedSize, progress: progress,
                                         target: target, policy: policy, splice: false, spliced: &spliced, cancel: cancel)
            }
        }
    }

    /// One source's attempts at the whole blob. With `splice`, a long plain-HTTP body goes from
    /// the socket to the file inside the kernel (`StreamingBlobFile.receive`); `spliced` is
    /// set when that happened.
    private func fetchBlobFrom(_ host: String, _ ref: RegistryReference, digest: Digest, to path: String, expectedSize: Int64?,
                               progress: (@Sendable (UInt64) -> Void)?, target: RegistryTarget, policy: RetryPolicy,
                               splice: Bool, spliced: inout Bool, cancel: CancellationFlag) throws -> UInt64 {
        // Writing and hashing run on the file's own queues, beside curl's receiving thread.
        let file = try StreamingBlobFile(path: path)
        defer { file.close() }
        var written: UInt64 = 0
        var started = false
        var tookOver = false
        defer { spliced = spliced || tookOver }
        func landed(_ bytes: UInt64) {
            written += bytes
            progress?(written)
            report(.pull, ref, digest, .progressed(bytes: written))
        }
        let blobURL = url(host: host, ref.repository, "blobs/\(digest)")
        var call = Call(target: target, host: host, scopes: [Authenticator.scope(repository: ref.repository, push: false)],
                        method: "GET", url: blobURL, policy: policy)
        call.pieceBuffers = file.pieceBuffers
        if splice {
            let stallLimit = options.lowSpeedTime
            call.bodyTakeover = { socket, remaining in
                // The answer's length must be the blob's before any of it goes to the file.
                let total = written + remaining
                if let expectedSize, total != UInt64(max(0, expectedSize)) {
                    throw RegistryError.sizeMismatch(target, expected: expectedSize, actual: Int64(clamping: total))
                }
                guard total <= UInt64(Int.max) else { return false }
                let taken = try file.receive(from: socket, count: remaining, stall: { idle in
                    if cancel.isCancelled { throw CancellationError() }
                    if idle >= stallLimit { throw CurlFailure.stalled(seconds: Int(stallLimit.components.seconds)) }
                }, landed: { bytes in
                    tookOver = true
                    landed(bytes)
                })
                return taken
            }
        }
        let response = try send(call, cancel: cancel) {
            started = false
            return (written > 0 ? ["Range: bytes=\(written)-"] : [], { status, headers, chunk in
                if !started {
                    started = true
                    if status == 206, written > 0 {
                        guard let range = headers["content-range"].flatMap(ContentRange.init(header:)), range.first == written else {
                            throw RegistryError.invalidResponse(target, reason: "resumed transfer starts at the wrong offset")
                        }
                    } else if written > 0 {
                        // The server sent the whole blob again: start over.
                        try file.restart()
                        written = 0
                    }
                }
                try file.append(chunk)
                if let expectedSize, written + UInt64(chunk.count) > UInt64(max(0, expectedSize)) {
                    throw RegistryError.sizeMismatch(target, expected: expectedSize, actual: Int64(written) + Int64(chunk.count))
                }
                landed(UInt64(chunk.count))
                return true
            })
        }
        // A failure here leaves the file to the next attempt (which truncates it) or to
        // fetchBlobBlocking, which removes it once every source has failed.
        try expect(response, [200, 206], call)
        if let expectedSize, Int64(written) != expectedSize {
            throw RegistryError.sizeMismatch(target, expected: expectedSize, actual: Int64(written))
        }
        try verify(digest, actual: try file.digest(), target)
        if tookOver { splicedBodies.add(1, ordering: .relaxed) }
        if response.effectiveURL != blobURL {
            redirects.store(redirectKey(ref, digest), url: response.effectiveURL, lifetime: options.redirectLifetime(for: response.effectiveURL))
        }
        return written
    }

    func readRangeBlocking(_ ref: RegistryReference, digest: Digest, range: Range<UInt64>, timeout: Duration?,
                           cancel: CancellationFlag) throws -> [UInt8] {
        if range.isEmpty { return [] }
        if let route = proxyRoute, route.shouldUse(probe: { self.proxyHealthy($0, cancel: cancel) }) {
            do {
                let bytes = try readRangeOnce(ref, digest: digest, range: range, timeout: timeout, via: route.options, cancel: cancel)
                route.succeeded()
                return bytes
            } catch let error as RegistryError {
                // The proxy's own failures (unreachable, 5xx) put it in backoff; either way read directly.
                if error.httpStatus.map({ $0 >= 500 }) ?? true { route.failed() }
                route.fellBack()
                logger.info("blob proxy \(route.options.url) failed for \(digest) (\(error)); reading directly")
            }
        }
        return try readRangeOnce(ref, digest: digest, range: range, timeout: timeout, via: nil, cancel: cancel)
    }

    /// One range read through `proxy` (a single attempt per source) or directly (with retries).
    private func readRangeOnce(_ ref: RegistryReference, digest: Digest, range: Range<UInt64>, timeout: Duration?,
                               via proxy: BlobProxyOptions?, cancel: CancellationFlag) throws -> [UInt8] {
        let target = RegistryTarget(registry: ref.host, repository: ref.repository,
                                    object: "blob \(digest) bytes \(range.lowerBound)..<\(range.upperBound)")
        let key = redirectKey(ref, digest)
        if let cached = redirects.lookup(key) {
            let call = Call(target: target, host: RegistryOptions.authority(of: cached), scopes: [], method: "GET", url: cached,
                            headers: proxy?.headers ?? [], timeout: timeout, policy: RetryPolicy(maxAttempts: 1), authenticate: false,
                            proxy: proxy?.url)
            do {
                return try rangeRequest(call, range: range, cancel: cancel).bytes
            } catch let error as RegistryError {
                logger.debug("cached redirect for \(digest) failed (\(error)); asking the registry again")
                redirects.remove(key)
            }
        }
        return try withPullSources(ref, object: target.object) { host, policy in
            let blobURL = url(host: host, ref.repository, "blobs/\(digest)")
            let call = Call(target: target, host: host, scopes: [Authenticator.scope(repository: ref.repository, push: false)],
                            method: "GET", url: blobURL, headers: proxy?.headers ?? [], timeout: timeout,
                            policy: proxy == nil ? policy : .none, proxy: proxy?.url)
            let (bytes, effectiveURL) = try rangeRequest(call, range: range, cancel: cancel)
            if effectiveURL != blobURL {
                redirects.store(key, url: effectiveURL, lifetime: options.redirectLifetime(for: effectiveURL))
            }
            return bytes
        }
    }

    /// The proxy's health check: a direct GET of `url` answering 2xx within two seconds.
    func proxyHealthy(_ url: String, cancel: CancellationFlag) -> Bool {
        var spec = options.requestSpec(method: "GET", url: url, timeout: .seconds(2))
        spec.proxy = ""
        let response = try? pool.withHandle { try $0.perform(spec, isCancelled: { cancel.isCancelled }, body: { _, _, _ in true }) }
        return response.map { (200..<300).contains($0.status) } ?? false
    }

    /// One ranged GET. A 206 must start at the range's first byte; a 200 (the server ignored
    /// Range) is read from its start, skipping at most `options.maxSkippedPrefix` bytes, and cut
    /// off as soon as the range is complete. A range past the end is `rangeNotSatisfiable`.
    private func rangeRequest(_ call: Call, range: Range<UInt64>, cancel: CancellationFlag) throws -> (bytes: [UInt8], effectiveURL: String) {
        let count = Int(range.upperBound - range.lowerBound)
        // A 206 body arrives as one piece of exactly `count` bytes, which becomes the result
        // without a copy (an array made from a slice that spans its whole buffer shares it).
        var call = call
        call.expectedBodyBytes = count
        let limit = options.maxSkippedPrefix
        var out: [UInt8] = []
        var skip: UInt64 = 0
        var started = false
        var total: UInt64?
        let target = call.target
        let response = try send(call, cancel: cancel) {
            out = []
            started = false
            skip = 0
            total = nil
            return (["Range: bytes=\(range.lowerBound)-\(range.upperBound - 1)"], { status, headers, chunk in
                if !started {
                    started = true
                    if status == 206 {
                        guard let served = headers["content-range"].flatMap(ContentRange.init(header:)),
                              served.first == range.lowerBound else {
                            throw RegistryError.invalidResponse(target, reason: "206 answer without a matching Content-Range")
                        }
                        total = served.total
                    } else {
                        // Range ignored: the body is the whole blob from byte 0.
                        total = headers["content-length"].flatMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
                        if let total, range.upperBound > total {
                            throw RegistryError.rangeNotSatisfiable(target, range: range, blobSize: total, status: status)
                        }
                        guard range.lowerBound <= limit else { throw RegistryError.rangeIgnored(target, range: range, limit: limit) }
                        skip = range.lowerBound
                    }
                }
                var piece = chunk
                if skip > 0 {
                    let dropped = Int(min(skip, UInt64(piece.count)))
                    piece = piece.dropFirst(dropped)
                    skip -= UInt64(dropped)
                }
                if out.isEmpty && piece.count == count {
                    out = Array(piece)
                } else {
                    if out.isEmpty { out.reserveCapacity(count) }
                    out += piece.prefix(count - out.count)
                }
                // Stop a full-body (200) answer once we have our bytes; let a 206 finish so that
                // its connection stays reusable.
                return status != 200 || out.count < count
            })
        }
        if response.status == 416 {
            let size = response.headers["content-range"].flatMap(ContentRange.unsatisfiedLength(header:))
            throw RegistryError.rangeNotSatisfiable(target, range: range, blobSize: size, status: 416)
        }
        try expect(response, [200, 206], call)
        guard out.count == count else {
            // A short answer: the blob ends inside the range.
            let size = total ?? (response.status == 200 ? range.lowerBound - skip + UInt64(out.count) : nil)
            throw RegistryError.rangeNotSatisfiable(target, range: range, blobSize: size, status: response.status)
        }
        return (out, response.effectiveURL)
    }

    func redirectKey(_ ref: RegistryReference, _ digest: Digest) -> String { "\(ref.host)/\(ref.repository)@\(digest)" }

    /// Picks the index entry for `platform`: an exact match (variant included) first, then a
    /// compatible one.
    static func select(_ platform: Platform, from index: Index, target: RegistryTarget) throws -> Descriptor {
        let candidates = index.manifests.filter {
            $0.mediaType == MediaType.ociManifest || $0.mediaType == MediaType.dockerManifest
        }
        if let exact = candidates.first(where: { $0.platform.map { $0.os == platform.os && $0.architecture == platform.architecture && $0.variant == platform.variant } ?? false }) {
            return exact
        }
        if let compatible = candidates.first(where: { $0.platform.map(platform.matches) ?? false }) { return compatible }
        throw RegistryError.noMatchingPlatform(target, requested: platform, available: index.manifests.compactMap(\.platform))
    }
}

// MARK: Helpers

func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], _ target: RegistryTarget) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: Data(bytes))
    } catch {
        throw RegistryError.invalidResponse(target, reason: "not a valid \(type): \(error)")
    }
}

func sha256Digest(_ bytes: [UInt8], _ target: RegistryTarget) throws -> Digest { Digest(sha256: SHA256.hash(bytes)) }

func parseDigest(_ text: String, _ target: RegistryTarget) throws -> Digest {
    do { return try Digest(parsing: text) } catch { throw RegistryError.invalidResponse(target, reason: "malformed digest \"\(text)\"") }
}

func verify(_ expected: Digest, actual: Digest, _ target: RegistryTarget) throws {
    guard expected.algorithm == "sha256" else { throw RegistryError.invalidResponse(target, reason: "only sha256 digests can be verified") }
    if expected != actual { throw RegistryError.digestMismatch(target, expected: expected, actual: actual) }
}

/// Runs file I/O, turning its errors into `RegistryError.io` naming the path.
func ioCall<T>(_ path: String, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as RegistryError { throw error } catch { throw RegistryError.io(path: path, reason: "\(error)") }
}

/// The manifest's media type: the Content-Type if it is specific, else the JSON's own
/// `mediaType`, else guessed from its shape. Schema 1 is refused.
func manifestMediaType(_ headers: HTTPHeaders, _ bytes: [UInt8], _ target: RegistryTarget) throws -> String {
    let contentType = headers["content-type"]?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
    let known = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList]
    if known.contains(contentType) { return contentType }
    struct Probe: Decodable {
        var mediaType: String?
        var schemaVersion: Int?
        var manifests: [Descriptor]?
        var config: Descriptor?
    }
    let probe = try decode(Probe.self, bytes, target)
    if let mediaType = probe.mediaType {
        guard known.contains(mediaType) else { throw RegistryError.unsupportedMediaType(target, mediaType: mediaType) }
        return mediaType
    }
    if probe.schemaVersion == 2 && probe.manifests != nil { return MediaType.ociIndex }
    if probe.schemaVersion == 2 && probe.config != nil { return MediaType.ociManifest }
    throw RegistryError.unsupportedMediaType(target, mediaType: contentType.isEmpty ? "unknown (schema \(probe.schemaVersion ?? 0))" : contentType)
}
