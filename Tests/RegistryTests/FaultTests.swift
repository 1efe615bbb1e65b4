import Foundation
import FerrySystem
import OCI
import Registry
import Testing

extension RegistryTests {
    /// A real registry behind Fixtures/fault_proxy.py: resets, cut bodies, 500s, 429s with
    /// Retry-After, stalls, wrong bytes, dead and empty mirrors.
    @Suite struct Faults {
        /// Short delays so that tests stay quick; the policy's shape is what matters.
        static let quickRetries = RetryPolicy(maxAttempts: 6, baseDelay: .milliseconds(20), maxDelay: .milliseconds(200))

        /// A registry holding one test image, pushed directly (not through any proxy).
        static func seededRegistry(_ dir: TempDir, fileSize: Int = 3 << 20) async throws -> (RegistryServer, TestImage) {
            let registry = try await RegistryServer()
            let image = try TestImage(in: dir, fileSize: fileSize)
            let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [registry.host]))
            try await push(image, to: try RegistryReference(parsing: "\(registry.host)/ferry/app:v1"), with: client)
            return (registry, image)
        }

        /// Resolves, fetches the config and the layer, and reads 20 ranges, checking every byte.
        static func pullEverything(_ client: RegistryClient, _ ref: RegistryReference, _ image: TestImage, _ dir: TempDir) async throws {
            let resolved = try await client.resolveManifest(ref)
            #expect(resolved.bytes == image.manifest)
            #expect(try await client.fetchConfig(ref, manifest: resolved.manifest) == image.config)
            let out = dir.file("layer-\(UUID().uuidString)")
            try await client.fetchBlob(ref, digest: image.layerDigest, to: out, expectedSize: Int64(image.layerBytes.count))
            #expect(try readFile(out) == image.layerBytes)
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<20 {
                let start = Int.random(in: 0..<(image.layerBytes.count - 70_000), using: &generator)
                let end = start + Int.random(in: 1...65_536, using: &generator)
                let bytes = try await client.readRange(ref, digest: image.layerDigest, range: UInt64(start)..<UInt64(end))
                #expect(bytes == Array(image.layerBytes[start..<end]), "range \(start)..<\(end)")
            }
        }

        @Test func resetsCutBodies500sAnd429sAreRetriedAndThePullSucceeds() async throws {
            let dir = try TempDir()
            let (registry, image) = try await Self.seededRegistry(dir)
            defer { registry.stop() }
            // Every second registry request fails, cycling through the faults.
            let proxy = try FaultProxy(upstream: registry.host, arguments: ["--faults", "500,reset,cut,429", "--every", "2"])
            defer { proxy.stop() }
            let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [proxy.host], retry: Self.quickRetries))
            try await Self.pullEverything(client, try RegistryReference(parsing: "\(proxy.host)/ferry/app:v1"), image, dir)
            let stats = try proxy.stats()
            #expect((stats["faults"] ?? 0) >= 10, "\(stats)")
            // A body cut in the middle of the layer was resumed from where it stopped.
            #expect(proxy.requests.contains { $0.hasPrefix("GET /v2/ferry/app/blobs/\(image.layerDigest)") && $0.hasSuffix(" 206") })
        }

        /// A layer long enough (12 MiB) that its body is spliced from the socket into the file.
        static let splicedLayerSize = 12 << 20

        @Test func longBodiesAreSplicedIntoTheFileWithEveryByteAsLibcurlReadsThem() async throws {
            let dir = try TempDir()
            let (registry, image) = try await Self.seededRegistry(dir, fileSize: Self.splicedLayerSize)
            defer { registry.stop() }
            let ref = try RegistryReference(parsing: "\(registry.host)/ferry/app:v1")
            for splice in [true, false] {
                var options = RegistryOptions(plainHTTPHosts: [registry.host])
                options.spliceBlobBodies = splice
                let client = RegistryClient(options: options)
                let out = dir.file("layer-\(splice)")
                let written = try await client.fetchBlob(ref, digest: image.layerDigest, to: out, expectedSize: Int64(image.layerBytes.count))
                #expect(written == UInt64(image.layerBytes.count))
                let bytes = try readFile(out)
                #expect(bytes.count == image.layerBytes.count)
                #expect(bytes == image.layerBytes, "splice \(splice): the file differs from the layer")
                #expect(client.blobBodiesSpliced == (splice ? 1 : 0))
                // Small blobs stay with libcurl.
                #expect(try await client.fetchBlobBytes(ref, digest: image.configDigest) == image.config)
                #expect(client.blobBodiesSpliced == (splice ? 1 : 0))
            }
        }

        @Test func splicedBodiesCutOrResetMidwayResumeAndWrongSizesAreRefused() async throws {
            let dir = try TempDir()
            let (registry, image) = try await Self.seededRegistry(dir, fileSize: Self.splicedLayerSize)
            defer { registry.stop() }
            // Every second request fails, in turn by a cut after half the body, a reset, a 500.
            let proxy = try FaultProxy(upstream: registry.host, arguments: ["--faults", "cut,reset,500", "--every", "2"])
            defer { proxy.stop() }
            let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [proxy.host], retry: Self.quickRetries))
            let ref = try RegistryReference(parsing: "\(proxy.host)/ferry/app:v1")
            for round in 0..<4 {
                let out = dir.file("layer-\(round)")
                try await client.fetchBlob(ref, digest: image.layerDigest, to: out, expectedSize: Int64(image.layerBytes.count))
                #expect(try readFile(out) == image.layerBytes, "round \(round)")
            }
            #expect(client.blobBodiesSpliced >= 4)
            #expect((try proxy.stats()["faults"] ?? 0) >= 3)
            // A cut body was resumed from where the spliced bytes ended.
            #expect(proxy.requests.contains { $0.hasPrefix("GET /v2/ferry/app/blobs/\(image.layerDigest)") && $0.hasSuffix(" 206") })
            // A registry whose length disagrees with the manifest is refused before any byte is kept.
            let direct = RegistryClient(options: RegistryOptions(plainHTTPHosts: [registry.host], retry: .none))
            let wrongSize = dir.file("wrong-size")
            await #expect {
                try await direct.fetchBlob(try RegistryReference(parsing: "\(registry.host)/ferry/app:v1"), digest: image.layerDigest,
                                           to: wrongSize, expectedSize: Int64(image.layerBytes.count - 1))
            } throws: { error in
                guard case RegistryError.sizeMismatch = error else { return false }
                return true
            }
            #expect(!FileManager.default.fileExists(atPath: wrongSize))
        }

        @Test func aStalledSplicedBodyIsAbandonedWithinTheLowSpeedTimeAndResumed() async throws {
            let dir = try TempDir()
            let (registry, image) = try await Self.seededRegistry(dir, fileSize: Self.splicedLayerSize)
            defer { registry.stop() }
            // Every second request sends half its body, then goes silent for 20 s.
            let proxy = try FaultProxy(upstream: registry.host, arguments: ["--faults", "stall", "--every", "2", "--stall-seconds", "20"])
            defer { proxy.stop() }
            let client = RegistryClient(
                options: RegistryOptions(plainHTTPHosts: [proxy.host], lowSpeedTime: .seconds(1), lowSpeedLimit: 1024, retry: Self.quickRetries))
            let ref = try RegistryReference(parsing: "\(proxy.host)/ferry/app:v1")
            let clock = ContinuousClock()
            let start = clock.now
            // Two pulls: one of the first two requests stalls midway through its spliced body.
            for round in 0..<2 {
                let out = dir.file("layer-\(round)")
                try await client.fetchBlob(ref, digest: image.layerDigest, to: out, expectedSize: Int64(image.layerBytes.count))
                #expect(try readFile(out) == image.layerBytes, "round \(round)")
            }
            // The stall was given up after about a second; waiting for the proxy would alone take 20.
            #expect(clock.now - start < .seconds(15))
            #expect((try proxy.stats()["faults"] ?? 0) >= 1)
            #expect(client.blobBodiesSpliced == 2)
            // The stalled body was resumed from where its spliced bytes ended.
            #expect(proxy.requests.contains { $0.hasPrefix("GET /v2/ferry/app/blobs/\(image.layerDigest)") && $0.hasSuffix(" 206") })
        }

        @Test func aStalledTransferIsAbandonedAndRetried() async throws {
            let dir = try TempDir()
            let (registry, image) = try await Self.seededRegistry(dir, fileSize: 1 << 20)
            defer { registry.stop() }
            let proxy = try FaultProxy(upstream: registry.host, arguments: ["--faults", "stall", "--every", "3", "--stall-seconds", "20"])
            defer { proxy.stop() }
            let client = RegistryClient(
                options: RegistryOptions(
                    plainHTTPHosts: [proxy.host], lowSpeedTime: .seconds(1),
                    lowSpeedLimit: 1024, retry: Self.quickRetries))
            let ref = try RegistryReference(parsing: "\(proxy.host)/ferry/app:v1")
            let resolved = try await client.resolveManifest(ref)
            #expect(try await client.fetchConfig(ref, manifest: resolved.manifest) == image.config)
            #expect(try await client.fetchBlobBytes(ref, digest: image.layerDigest) == image.layerBytes)
            #expect((try proxy.stats()["faults"] ?? 0) >= 1)
        }

        @Test func deadAndEmptyMirrorsFallBackToTheOrigin() async throws {
            let dir = try TempDir()
            let (registry, image) = try await Self.seededRegistry(dir)
            defer { registry.stop() }
            let empty = try await RegistryServer()
            defer { empty.stop() }
            let emptyCounted = try FaultProxy(upstream: empty.host, arguments: [])
            defer { emptyCounted.stop() }
            let dead = "127.0.0.1:\(try freePort())"
            let client = RegistryClient(
                options: RegistryOptions(
                    plainHTTPHosts: [registry.host, emptyCounted.host, dead], mirrors: [registry.host: [dead, emptyCounted.host]],
                    connectTimeout: .seconds(2), retry: Self.quickRetries))
            try await Self.pullEverything(client, try RegistryReference(parsing: "\(registry.host)/ferry/app:v1"), image, dir)
            // The empty mirror was asked first each time (and said 404).
            let asked = emptyCounted.requests
            #expect(asked.contains { $0.hasPrefix("GET /v2/ferry/app/manifests/v1") && $0.hasSuffix(" 404") }, "\(asked)")
            #expect(asked.contains { $0.hasPrefix("GET /v2/ferry/app/blobs/\(image.layerDigest)") && $0.hasSuffix(" 404") })

            // When the origin fails too, the error lists every source in order.
            registry.stop()
            await #expect {
                _ = try await client.fetchManifest(try RegistryReference(parsing: "\(registry.host)/ferry/app:v1"))
            } throws: { error in
                guard case let RegistryError.allSourcesFailed(_, errors) = error, errors.count == 3 else { return false }
                let text = "\(error)"
                return text.contains(dead) && text.contains(emptyCounted.host) && text.contains("not found (HTTP 404)")
            }
        }

        @Test func aPersistentFailureNamesRegistryRepositoryDigestAndStatus() async throws {
            let dir = try TempDir()
            let (registry, image) = try await Self.seededRegistry(dir, fileSize: 64 << 10)
            defer { registry.stop() }
            let proxy = try FaultProxy(upstream: registry.host, arguments: ["--faults", "503", "--every", "1"])
            defer { proxy.stop() }
            let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [proxy.host], retry: Self.quickRetries))
            let ref = try RegistryReference(parsing: "\(proxy.host)/ferry/app:v1")
            await #expect {
                try await client.fetchBlob(ref, digest: image.layerDigest, to: dir.file("never"))
            } throws: { error in
                let text = "\(error)"
                return (error as? RegistryError)?.httpStatus == 503 && text.contains(proxy.host) && text.contains("ferry/app")
                    && text.contains(image.layerDigest.description) && text.contains("HTTP 503")
            }
            // Bounded by the policy: exactly maxAttempts tries.
            #expect(try proxy.stats()["requests"] == Self.quickRetries.maxAttempts)
            #expect(!FileManager.default.fileExists(atPath: dir.file("never")))

            // Nobody listening: a clear error after the policy's attempts.
            let nowhere = "127.0.0.1:\(try freePort())"
            let lost = RegistryClient(options: RegistryOptions(plainHTTPHosts: [nowhere], retry: Self.quickRetries))
            await #expect {
                _ = try await lost.fetchManifest(try RegistryReference(parsing: "\(nowhere)/ferry/app:v1"))
            } throws: { error in
                guard case let RegistryError.unreachable(_, _, attempts, _) = error else { return false }
                return attempts == Self.quickRetries.maxAttempts && "\(error)".contains("\(nowhere)/ferry/app")
            }
        }

        @Test(arguments: [256 << 10, Self.splicedLayerSize])
        func wrongBytesAreRejectedByDigestVerification(fileSize: Int) async throws {
            let dir = try TempDir()
            let (registry, image) = try await Self.seededRegistry(dir, fileSize: fileSize)
            defer { registry.stop() }
            let proxy = try FaultProxy(upstream: registry.host, arguments: ["--corrupt-blobs"])
            defer { proxy.stop() }
            let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [proxy.host], retry: Self.quickRetries))
            let ref = try RegistryReference(parsing: "\(proxy.host)/ferry/app:v1")
            let out = dir.file("corrupt")
            await #expect {
                try await client.fetchBlob(ref, digest: image.layerDigest, to: out, expectedSize: Int64(image.layerBytes.count))
            } throws: { error in
                guard case let RegistryError.digestMismatch(target, expected, actual) = error else { return false }
                return expected == image.layerDigest && actual != expected && target.repository == "ferry/app"
                    && "\(error)".contains(image.layerDigest.description)
            }
            #expect(!FileManager.default.fileExists(atPath: out), "a blob that failed verification is not left behind")
            await #expect {
                _ = try await client.fetchBlobBytes(ref, digest: image.configDigest)
            } throws: { error in
                guard case RegistryError.digestMismatch = error else { return false }
                return true
            }
        }
    }
}
