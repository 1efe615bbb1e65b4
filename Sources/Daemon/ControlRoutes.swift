import Foundation
import Logging

/// The control API's routes: JSON in and out over the Unix socket (`ferry` is the client).
extension FerryDaemon {
    public func handle(_ request: ControlRequest) async -> ControlResponse {
        switch (request.method, request.path) {
        case ("GET", "/health"):
            if let problem = healthProblem() {
                return .json(["status": "unhealthy", "backend": backend.name, "problem": problem], status: 503)
            }
            return .json(["status": "ok", "backend": backend.name])
        case ("GET", "/images"):
            return .json(imageSummaries())
        case ("GET", "/metrics"):
            return ControlResponse(status: 200, contentType: "text/plain; version=0.0.4", body: Array(metricsText().utf8))
        case ("POST", "/mounts"):
            struct Body: Decodable {
                var image: String; var mountpoint: String; var backend: String?; var domain: String?
                var prefetch: [String]?; var prefetch_all: Bool?; var kernel_readahead_kb: Int?
            }
            guard let body = try? JSONDecoder().decode(Body.self, from: Data(request.body)) else {
                return .error("expected {\"image\": REF, \"mountpoint\": PATH}", status: 400)
            }
            if let wanted = body.backend, wanted != "auto", wanted != backend.name {
                return .error("ferryd serves this kernel with the \(backend.name) backend; start it with --backend \(wanted) to use \(wanted)",
                              status: 409)
            }
            do {
                if let domain = body.domain, !Self.isValidDomain(domain) {
                    return .error("domain \"\(domain)\": use 1–64 letters, digits, '.', '_' or '-'", status: 400)
                }
                if let kib = body.kernel_readahead_kb, let problem = DaemonConfiguration.kernelReadaheadProblem(kib) {
                    return .error("kernel_readahead_kb \(kib): \(problem)", status: 400)
                }
                let result = try await mount(image: body.image, at: body.mountpoint, domainID: body.domain,
                                       prefetch: (body.prefetch ?? []).map { Array($0.utf8.drop(while: { $0 == UInt8(ascii: "/") })) },
                                       prefetchAll: body.prefetch_all ?? false, kernelReadaheadKiB: body.kernel_readahead_kb)
                return .json(result, status: 201)
            } catch {
                logger.error("mount failed", metadata: ["image": "\(body.image)", "error": "\(error)"])
                return .error("\(error)", status: 500)
            }
        case ("GET", "/cache"):
            guard let cache else { return .json(CacheState(limit: nil, storeBytes: 0, blobCacheBytes: 0, storeWritesSuspended: false)) }
            let usage = cache.usage()
            return .json(CacheState(limit: cache.limit, storeBytes: usage.storeBytes, blobCacheBytes: usage.blobCacheBytes,
                                    storeWritesSuspended: cache.storeWritesSuspended))
        case ("POST", "/gc"):
            struct Body: Decodable { var target: UInt64? }
            let body = request.body.isEmpty ? nil : try? JSONDecoder().decode(Body.self, from: Data(request.body))
            guard let report = await collectGarbage(target: body?.target) else {
                return .error("ferryd keeps no local caches (chunk_store is off and the backend has none)", status: 409)
            }
            return .json(report)
        case ("GET", "/trace"):
            let image: RegisteredImage
            do {
                image = try tracedImage(mountpoint: request.query["mount"], image: request.query["image"])
            } catch {
                switch error {
                case let .notFound(message): return .error(message, status: 404)
                case let .ambiguous(message): return .error(message, status: 400)
                }
            }
            do {
                return .json(try await traceReport(of: image))
            } catch {
                return .error("cannot read the bootstrap of \(image.reference): \(error)", status: 500)
            }
        case ("DELETE", "/mounts"):
            guard let path = request.query["path"] else { return .error("missing ?path=MOUNTPOINT", status: 400) }
            do {
                try await unmount(path)
                return .json(["unmounted": path])
            } catch {
                return .error("\(error)", status: 500)
            }
        default:
            return .error("no route for \(request.method) \(request.path)", status: 404)
        }
    }

    /// What `GET /cache` answers.
    public struct CacheState: Codable, Sendable {
        public var limit: UInt64?
        public var storeBytes: UInt64
        public var blobCacheBytes: UInt64
        public var storeWritesSuspended: Bool
    }
}
