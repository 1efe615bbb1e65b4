public import OCI
import FerrySystem
import Foundation

/// How a blob reached the registry.
public enum BlobPushResult: Sendable, Equatable {
    /// The repository already had it (HEAD answered 200).
    case alreadyExists
    /// Mounted from another repository of the same registry without uploading.
    case mounted
    /// Uploaded.
    case uploaded
}

extension RegistryClient {
    /// The blob's size if the repository has it, nil if not (`HEAD /v2/<repo>/blobs/<digest>`).
    public func blobExists(_ ref: RegistryReference, digest: Digest) async throws -> Int64? {
        try await offload { cancel in try self.blobExistsBlocking(ref, digest: digest, push: false, cancel: cancel) }
    }

    /// Uploads the file at `path` as blob `digest` unless the repository has it. With
    /// `mountFrom` (another repository on the same registry), asks for a cross-repository mount
    /// first. Files larger than `options.uploadChunkSize` go up in PATCH chunks. A failed
    /// upload is restarted from the beginning per the retry policy.
    @discardableResult
    public func pushBlob(_ ref: RegistryReference, fromFile path: String, digest: Digest, size: UInt64,
                         mountFrom: String? = nil) async throws -> BlobPushResult {
        try await offload { cancel in
            let file = try ioCall(path) { try FileDescriptor.open(path, .readOnly) }
            defer { try? file.close() }
            return try self.pushBlobBlocking(ref, payload: .file(file), digest: digest, size: size, mountFrom: mountFrom, cancel: cancel)
        }
    }

    /// Uploads a small in-memory blob (a config, a bootstrap) unless the repository has it.
    @discardableResult
    public func pushBlob(_ ref: RegistryReference, bytes: [UInt8], mountFrom: String? = nil) async throws -> BlobPushResult {
        let digest = Digest(sha256: SHA256.hash(bytes))
        return try await offload { cancel in
            try self.pushBlobBlocking(ref, payload: .bytes(bytes), digest: digest, size: UInt64(bytes.count), mountFrom: mountFrom, cancel: cancel)
        }
    }

    /// Uploads a manifest or index under `reference` (a tag, or its digest; default: the
    /// reference's tag, else its digest). Returns the manifest's digest, checked against the
    /// registry's `Docker-Content-Digest`.
    @discardableResult
    public func pushManifest(_ ref: RegistryReference, bytes: [UInt8], mediaType: String, reference: String? = nil) async throws -> Digest {
        let digest = Digest(sha256: SHA256.hash(bytes))
        let name = reference ?? ref.tag ?? digest.description
        return try await offload { cancel in
            let target = RegistryTarget(registry: ref.host, repository: ref.repository, object: "manifest \(name)")
            let call = Call(target: target, host: ref.host, scopes: [Authenticator.scope(repository: ref.repository, push: true)],
                            method: "PUT", url: self.url(host: ref.host, ref.repository, "manifests/\(name)"),
                            headers: ["Content-Type: \(mediaType)"], body: .bytes(bytes), policy: self.options.retry)
            let response = try self.send(call, cancel: cancel)
            try self.expect(response, [200, 201], call)
            if let header = response.headers["docker-content-digest"], let served = try? Digest(parsing: header),
               served.algorithm == "sha256" {
                try verify(digest, actual: served, target)
            }
            return digest
        }
    }

    // MARK: Blocking implementations

    enum BlobPayload {
        case file(FileDescriptor)
        case bytes([UInt8])

        func body(offset: UInt64, length: UInt64) -> CurlUploadBody {
            switch self {
            case let .file(fd): return .file(fd, offset: offset, length: length)
            case let .bytes(bytes): return .bytes(Array(bytes[Int(offset)..<Int(offset + length)]))
            }
        }
    }

    func blobExistsBlocking(_ ref: RegistryReference, digest: Digest, push: Bool, cancel: CancellationFlag) throws -> Int64? {
        let target = RegistryTarget(registry: ref.host, repository: ref.repository, object: "blob \(digest)")
        let call = Call(target: target, host: ref.host, scopes: [Authenticator.scope(repository: ref.repository, push: push)],
                        method: "HEAD", url: url(host: ref.host, ref.repository, "blobs/\(digest)"), policy: options.retry)
        let response = try send(call, cancel: cancel)
        if response.status == 404 { return nil }
        try expect(response, [200], call)
        return response.headers["content-length"].flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) } ?? 0
    }

    func pushBlobBlocking(_ ref: RegistryReference, payload: BlobPayload, digest: Digest, size: UInt64, mountFrom: String?,
                          cancel: CancellationFlag) throws -> BlobPushResult {
        report(.push, ref, digest, .started(total: size))
        do {
            let result = try pushBlobAttempts(ref, payload: payload, digest: digest, size: size, mountFrom: mountFrom, cancel: cancel)
            report(.push, ref, digest, .finished(bytes: result == .uploaded ? size : 0, skipped: result != .uploaded))
            return result
        } catch {
            report(.push, ref, digest, .failed)
            throw error
        }
    }

    private func pushBlobAttempts(_ ref: RegistryReference, payload: BlobPayload, digest: Digest, size: UInt64, mountFrom: String?,
                                  cancel: CancellationFlag) throws -> BlobPushResult {
        if try blobExistsBlocking(ref, digest: digest, push: true, cancel: cancel) != nil { return .alreadyExists }
        let target = RegistryTarget(registry: ref.host, repository: ref.repository, object: "blob \(digest)")
        var scopes = [Authenticator.scope(repository: ref.repository, push: true)]
        if let mountFrom, mountFrom != ref.repository { scopes.append(Authenticator.scope(repository: mountFrom, push: false)) }
        let single = RetryPolicy(maxAttempts: 1)

        // The whole session (POST, PATCH…, PUT) is retried from the start: a half-applied PATCH
        // cannot be repeated safely.
        return try withRetries(options.retry, cancel: cancel) { _ in
            do {
                return .done(try uploadSession(ref, payload: payload, digest: digest, size: size, mountFrom: mountFrom,
                                               scopes: scopes, target: target, policy: single, cancel: cancel))
            } catch let error as RegistryError {
                switch error {
                case .unreachable: return .retry(error, retryAfterSeconds: nil)
                case let .httpStatus(_, status, _) where isRetryableStatus(status): return .retry(error, retryAfterSeconds: nil)
                default: throw error
                }
            }
        }
    }

    private func uploadSession(_ ref: RegistryReference, payload: BlobPayload, digest: Digest, size: UInt64, mountFrom: String?,
                               scopes: [String], target: RegistryTarget, policy: RetryPolicy, cancel: CancellationFlag) throws -> BlobPushResult {
        var startURL = url(host: ref.host, ref.repository, "blobs/uploads/")
        if let mountFrom, mountFrom != ref.repository {
            startURL = appendingQuery(appendingQuery(startURL, "mount", digest.description), "from", mountFrom)
        }
        let start = Call(target: target, host: ref.host, scopes: scopes, method: "POST", url: startURL, policy: policy)
        let started = try send(start, cancel: cancel)
        if started.status == 201 && mountFrom != nil { return .mounted }
        try expect(started, [202], start)
        var location = try uploadLocation(started, base: startURL, target: target)

        let chunkSize = options.uploadChunkSize ?? 0
        if chunkSize > 0 && size > chunkSize {
            var offset: UInt64 = 0
            while offset < size {
                let length = min(chunkSize, size - offset)
                var patch = Call(target: target, host: ref.host, scopes: scopes, method: "PATCH", url: location,
                                 headers: ["Content-Type: application/octet-stream", "Content-Range: \(offset)-\(offset + length - 1)"],
                                 body: payload.body(offset: offset, length: length), policy: policy, idempotent: false)
                let base = offset
                patch.uploadProgress = { [self] sent in report(.push, ref, digest, .progressed(bytes: base + sent)) }
                let response = try send(patch, cancel: cancel)
                try expect(response, [202], patch)
                location = try uploadLocation(response, base: location, target: target)
                offset += length
            }
            let finish = Call(target: target, host: ref.host, scopes: scopes, method: "PUT",
                              url: appendingQuery(location, "digest", digest.description),
                              headers: ["Content-Type: application/octet-stream"], policy: policy, idempotent: false)
            try finishUpload(send(finish, cancel: cancel), finish, digest: digest)
        } else {
            var put = Call(target: target, host: ref.host, scopes: scopes, method: "PUT",
                           url: appendingQuery(location, "digest", digest.description),
                           headers: ["Content-Type: application/octet-stream"], body: payload.body(offset: 0, length: size),
                           policy: policy, idempotent: false)
            put.uploadProgress = { [self] sent in report(.push, ref, digest, .progressed(bytes: sent)) }
            try finishUpload(send(put, cancel: cancel), put, digest: digest)
        }
        return .uploaded
    }

    private func finishUpload(_ response: CurlResponse, _ call: Call, digest: Digest) throws {
        try expect(response, [201], call)
        if let header = response.headers["docker-content-digest"], let served = try? Digest(parsing: header) {
            try verify(digest, actual: served, call.target)
        }
    }

    private func uploadLocation(_ response: CurlResponse, base: String, target: RegistryTarget) throws -> String {
        guard let location = response.headers["location"], !location.isEmpty else {
            throw RegistryError.invalidResponse(target, reason: "upload answer (HTTP \(response.status)) has no Location")
        }
        return resolveLocation(location, against: base)
    }
}
