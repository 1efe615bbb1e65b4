import Foundation
import FerrySystem
import OCI
import Registry
import Testing

extension RegistryTests {
    /// Blob GETs redirected to a storage backend, as S3/GCS-backed registries do: a front proxy
    /// answers 307 to a second server whose signed URLs work a limited number of times.
    @Suite struct Redirects {
        struct Setup {
            let registry: RegistryServer
            let storage: FaultProxy
            let front: FaultProxy
            let image: TestImage
            let ref: RegistryReference

            func stop() {
                front.stop()
                storage.stop()
                registry.stop()
            }
        }

        static func start(_ dir: TempDir, storageUses: Int, frontArguments: [String] = []) async throws -> Setup {
            let registry = try await RegistryServer()
            let image = try TestImage(in: dir, fileSize: 2 << 20)
            let direct = RegistryClient(options: RegistryOptions(plainHTTPHosts: [registry.host]))
            try await push(image, to: try RegistryReference(parsing: "\(registry.host)/ferry/app:v1"), with: direct)
            let storage = try FaultProxy(upstream: registry.host, arguments: ["--storage-uses", String(storageUses)])
            let front = try FaultProxy(
                upstream: registry.host,
                arguments: ["--redirect-blobs", "--storage-base", "http://\(storage.host)"] + frontArguments)
            return Setup(
                registry: registry, storage: storage, front: front, image: image,
                ref: try RegistryReference(parsing: "\(front.host)/ferry/app:v1"))
        }

        @Test func rangeReadsReuseTheRedirectUntilTheStorageURLStopsWorking() async throws {
            let dir = try TempDir()
            let setup = try await Self.start(dir, storageUses: 5)
            defer { setup.stop() }
            let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [setup.front.host], redirectCacheLifetime: .seconds(600)))
            let layer = setup.image.layerBytes
            for i in 0..<12 {
                let start = i * 10_000
                let bytes = try await client.readRange(
                    setup.ref, digest: setup.image.layerDigest, range: UInt64(start)..<UInt64(start + 5000))
                #expect(bytes == Array(layer[start..<(start + 5000)]), "read \(i)")
            }
            // Reads 1, 6 and 11 asked the registry (the first, then each time a signed URL was
            // used up and answered 403); all others went straight to the storage server.
            let front = try setup.front.stats(), storage = try setup.storage.stats()
            #expect(front["blob_gets"] == 3, "\(front)")
            #expect(storage["storage_gets"] == 14 && storage["storage_refused"] == 2, "\(storage)")
            // Every storage answer was a range (206) or a used-up URL (403).
            #expect(
                setup.storage.requests.filter { $0.hasPrefix("GET /_storage/") }.allSatisfy { $0.hasSuffix(" 206") || $0.hasSuffix(" 403") }
            )

            // A whole-blob pull follows the redirect too, verified by digest.
            let out = dir.file("layer")
            try await client.fetchBlob(setup.ref, digest: setup.image.layerDigest, to: out, expectedSize: Int64(layer.count))
            #expect(try readFile(out) == layer)
        }

        @Test func aRedirectIsForgottenWhenItsLifetimeEnds() async throws {
            let dir = try TempDir()
            let setup = try await Self.start(dir, storageUses: 1000)
            defer { setup.stop() }
            let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [setup.front.host], redirectCacheLifetime: .seconds(1)))
            let layer = setup.image.layerBytes
            for _ in 0..<3 {
                #expect(try await client.readRange(setup.ref, digest: setup.image.layerDigest, range: 100..<200) == Array(layer[100..<200]))
            }
            #expect(try setup.front.stats()["blob_gets"] == 1)
            try await Task.sleep(for: .milliseconds(1500))
            #expect(try await client.readRange(setup.ref, digest: setup.image.layerDigest, range: 300..<400) == Array(layer[300..<400]))
            #expect(try setup.front.stats()["blob_gets"] == 2, "the expired redirect was not used")
        }

        @Test func aSignedURLIsNotReusedPastTheExpiryItCarries() async throws {
            let dir = try TempDir()
            let setup = try await Self.start(dir, storageUses: 1000, frontArguments: ["--storage-expires", "2"])
            defer { setup.stop() }
            let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [setup.front.host], redirectCacheLifetime: .seconds(600)))
            let layer = setup.image.layerBytes
            for _ in 0..<3 {
                #expect(try await client.readRange(setup.ref, digest: setup.image.layerDigest, range: 0..<64) == Array(layer[0..<64]))
            }
            #expect(try setup.front.stats()["blob_gets"] == 1)
            try await Task.sleep(for: .milliseconds(2500))
            #expect(try await client.readRange(setup.ref, digest: setup.image.layerDigest, range: 64..<128) == Array(layer[64..<128]))
            #expect(try setup.front.stats()["blob_gets"] == 2)
            #expect(try setup.storage.stats()["storage_refused"] == 0, "the expired URL was not even tried")
        }
    }
}
