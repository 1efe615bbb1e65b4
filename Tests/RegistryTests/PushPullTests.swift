import Foundation
import FerrySystem
import OCI
import Registry
import Testing

/// All tests that start servers run one at a time (the machine is small and shared).
@Suite(.serialized) struct RegistryTests {}

extension RegistryTests {
    @Suite struct PushPull {
        /// Pushes 6 MiB of random bytes to `registry` as a blob of `ferry/ranges`.
        func pushRandomBlob(to registry: RegistryServer) async throws -> ([UInt8], Digest, RegistryClient, RegistryReference) {
            let dir = try TempDir()
            let blob = randomBytes(6 << 20)
            try writeFile(dir.file("blob"), blob)
            let digest = Digest(sha256: SHA256.hash(blob))
            let client = client(registry)
            let ref = try RegistryReference(parsing: "\(registry.host)/ferry/ranges:latest")
            try await client.pushBlob(ref, fromFile: dir.file("blob"), digest: digest, size: UInt64(blob.count))
            return (blob, digest, client, ref)
        }

        func client(_ registry: RegistryServer, chunkSize: UInt64? = nil) -> RegistryClient {
            RegistryClient(options: RegistryOptions(plainHTTPHosts: [registry.host], uploadChunkSize: chunkSize))
        }

        @Test func pushedImageIsPulledBackByteForByteAndSkopeoReadsIt() async throws {
            let registry = try await RegistryServer()
            defer { registry.stop() }
            let dir = try TempDir()
            let image = try TestImage(in: dir)
            let client = client(registry)
            let ref = try RegistryReference(parsing: "\(registry.host)/ferry/test:v1")

            #expect(try await client.blobExists(ref, digest: image.layerDigest) == nil)
            #expect(try await client.pushBlob(ref, fromFile: image.layerPath, digest: image.layerDigest,
                                              size: UInt64(image.layerBytes.count)) == .uploaded)
            #expect(try await client.pushBlob(ref, bytes: image.config) == .uploaded)
            #expect(try await client.pushBlob(ref, bytes: image.config) == .alreadyExists)
            let pushed = try await client.pushManifest(ref, bytes: image.manifest, mediaType: MediaType.ociManifest)
            #expect(pushed == image.manifestDigest)
            #expect(try await client.blobExists(ref, digest: image.layerDigest) == Int64(image.layerBytes.count))

            let resolved = try await client.resolveManifest(ref, platform: Platform(os: "linux", architecture: "amd64"))
            #expect(resolved.digest == image.manifestDigest)
            #expect(resolved.bytes == image.manifest)
            #expect(resolved.indexDigest == nil)
            #expect(try await client.fetchConfig(ref, manifest: resolved.manifest) == image.config)
            let out = dir.file("pulled.tar")
            let written = try await client.fetchBlob(ref, digest: image.layerDigest, to: out, expectedSize: Int64(image.layerBytes.count))
            #expect(written == UInt64(image.layerBytes.count))
            #expect(try readFile(out) == image.layerBytes)

            // By digest too.
            var byDigest = ref
            byDigest.tag = nil
            byDigest.digest = image.manifestDigest
            #expect(try await client.fetchManifest(byDigest).bytes == image.manifest)

            // skopeo, an independent client, reads what we pushed.
            if let skopeo = Fixtures.which("skopeo") {
                let json = try run([skopeo, "inspect", "--tls-verify=false", "docker://\(registry.host)/ferry/test:v1"])
                #expect(json.contains(image.manifestDigest.description))
                #expect(json.contains(image.layerDigest.description))
                let raw = try run([skopeo, "inspect", "--raw", "--tls-verify=false", "docker://\(registry.host)/ferry/test:v1"])
                #expect(Array(raw.utf8) == image.manifest)
            } else {
                print("skipping skopeo check: skopeo not installed")
            }
        }

        @Test func blobsAreMountedAcrossRepositoriesAndManifestsPushedByDigest() async throws {
            let registry = try await RegistryServer()
            defer { registry.stop() }
            let dir = try TempDir()
            let image = try TestImage(in: dir, fileSize: 64 << 10)
            let client = client(registry)
            let source = try RegistryReference(parsing: "\(registry.host)/ferry/source:v1")
            let target = try RegistryReference(parsing: "\(registry.host)/ferry/target:v1")
            try await client.pushBlob(source, fromFile: image.layerPath, digest: image.layerDigest, size: UInt64(image.layerBytes.count))
            try await client.pushBlob(source, bytes: image.config)

            #expect(try await client.pushBlob(target, fromFile: image.layerPath, digest: image.layerDigest,
                                              size: UInt64(image.layerBytes.count), mountFrom: "ferry/source") == .mounted)
            #expect(try await client.pushBlob(target, bytes: image.config, mountFrom: "ferry/source") == .mounted)
            let digest = try await client.pushManifest(target, bytes: image.manifest, mediaType: MediaType.ociManifest,
                                                       reference: image.manifestDigest.description)
            #expect(digest == image.manifestDigest)
            var byDigest = target
            byDigest.tag = nil
            byDigest.digest = digest
            #expect(try await client.resolveManifest(byDigest).bytes == image.manifest)
            #expect(try await client.fetchBlobBytes(target, digest: image.layerDigest) == image.layerBytes)
        }

        @Test func chunkedUploadProducesTheSameBlob() async throws {
            let registry = try await RegistryServer()
            defer { registry.stop() }
            let dir = try TempDir()
            let blob = randomBytes(2_500_000)
            try writeFile(dir.file("blob"), blob)
            let digest = Digest(sha256: SHA256.hash(blob))
            let client = client(registry, chunkSize: 1 << 20)
            let ref = try RegistryReference(parsing: "\(registry.host)/ferry/chunked:latest")
            #expect(try await client.pushBlob(ref, fromFile: dir.file("blob"), digest: digest, size: UInt64(blob.count)) == .uploaded)
            #expect(try await client.fetchBlobBytes(ref, digest: digest, expectedSize: Int64(blob.count)) == blob)
        }

        @Test func indexResolvesToTheRequestedPlatform() async throws {
            let registry = try await RegistryServer()
            defer { registry.stop() }
            let dir = try TempDir()
            let amd = try TestImage(in: dir, fileSize: 1000, architecture: "amd64")
            let arm = try TestImage(in: dir, fileSize: 1000, architecture: "arm64")
            let client = client(registry)
            let ref = try RegistryReference(parsing: "\(registry.host)/ferry/multi:latest")
            for image in [amd, arm] {
                try await client.pushBlob(ref, fromFile: image.layerPath, digest: image.layerDigest, size: UInt64(image.layerBytes.count))
                try await client.pushBlob(ref, bytes: image.config)
                try await client.pushManifest(ref, bytes: image.manifest, mediaType: MediaType.ociManifest, reference: image.manifestDigest.description)
            }
            let index = Index(manifests: [
                Descriptor(mediaType: MediaType.ociManifest, digest: amd.manifestDigest, size: Int64(amd.manifest.count),
                           platform: Platform(os: "linux", architecture: "amd64")),
                Descriptor(mediaType: MediaType.ociManifest, digest: arm.manifestDigest, size: Int64(arm.manifest.count),
                           platform: Platform(os: "linux", architecture: "arm64", variant: "v8")),
            ])
            let indexBytes = try CanonicalJSON.encode(index)
            let indexDigest = try await client.pushManifest(ref, bytes: indexBytes, mediaType: MediaType.ociIndex)

            let resolvedArm = try await client.resolveManifest(ref, platform: Platform(os: "linux", architecture: "arm64", variant: "v8"))
            #expect(resolvedArm.digest == arm.manifestDigest)
            #expect(resolvedArm.indexDigest == indexDigest)
            #expect(resolvedArm.manifest.config.digest == arm.configDigest)
            let resolvedAmd = try await client.resolveManifest(ref, platform: Platform(os: "linux", architecture: "amd64"))
            #expect(resolvedAmd.bytes == amd.manifest)
            await #expect {
                _ = try await client.resolveManifest(ref, platform: Platform(os: "linux", architecture: "s390x"))
            } throws: { error in
                guard case RegistryError.noMatchingPlatform = error else { return false }
                return "\(error)".contains("ferry/multi") && "\(error)".contains("linux/arm64/v8")
            }
        }

        @Test func manyRandomRangesReturnExactlyTheRequestedBytes() async throws {
            let registry = try await RegistryServer()
            defer { registry.stop() }
            let (blob, digest, client, ref) = try await pushRandomBlob(to: registry)

            let source = RegistryBlobSource(client: client, repository: ref)
            var generator = SystemRandomNumberGenerator()
            for i in 0..<200 {
                let start = UInt64.random(in: 0..<UInt64(blob.count - 1), using: &generator)
                let length = i % 10 == 0 ? UInt64.random(in: 1...(512 << 10), using: &generator) : UInt64.random(in: 1...8192, using: &generator)
                let end = min(UInt64(blob.count), start + length)
                let bytes = try await source.read(blob: digest, range: start..<end)
                #expect(bytes == Array(blob[Int(start)..<Int(end)]), "range \(start)..<\(end)")
            }
            // The first byte, the last byte, the whole blob.
            #expect(try await source.read(blob: digest, range: 0..<1) == [blob[0]])
            #expect(try await source.read(blob: digest, range: UInt64(blob.count - 1)..<UInt64(blob.count)) == [blob[blob.count - 1]])
            #expect(try await source.read(blob: digest, range: 0..<UInt64(blob.count)) == blob)
        }

        @Test func rangesBeyondTheEndAndServersIgnoringRange() async throws {
            let registry = try await RegistryServer()
            defer { registry.stop() }
            let (blob, digest, client, ref) = try await pushRandomBlob(to: registry)
            let size = UInt64(blob.count)
            let source = RegistryBlobSource(client: client, repository: ref)
            var generator = SystemRandomNumberGenerator()

            // Beyond the end (wholly, or the tail of the range) is an error naming the blob and its size.
            for range in [size..<(size + 10), (size - 5)..<(size + 5)] {
                await #expect {
                    _ = try await source.read(blob: digest, range: range)
                } throws: { error in
                    guard case let RegistryError.rangeNotSatisfiable(_, failed, blobSize, _) = error else { return false }
                    return failed == range && blobSize == size && "\(error)".contains(digest.description)
                }
            }

            // A server that ignores Range (answers 200 with the whole blob) still yields exact bytes.
            let proxy = try FaultProxy(upstream: registry.host, arguments: ["--ignore-range"])
            defer { proxy.stop() }
            let viaProxy = RegistryClient(options: RegistryOptions(plainHTTPHosts: [proxy.host], maxSkippedPrefix: 4 << 20))
            let proxied = try RegistryReference(parsing: "\(proxy.host)/ferry/ranges:latest")
            for i in 0..<20 {
                let start = i == 0 ? 0 : UInt64.random(in: 0..<(4 << 20), using: &generator)
                let end = i == 1 ? size : start + UInt64.random(in: 1...5000, using: &generator)
                let bytes = try await viaProxy.readRange(proxied, digest: digest, range: start..<end)
                #expect(bytes == Array(blob[Int(start)..<Int(end)]), "range \(start)..<\(end)")
            }
            #expect(try proxy.stats()["blob_gets"] == 20)
            // Past the skip limit: a clear error instead of downloading most of the blob.
            await #expect {
                _ = try await viaProxy.readRange(proxied, digest: digest, range: (5 << 20)..<((5 << 20) + 100))
            } throws: { error in
                guard case RegistryError.rangeIgnored = error else { return false }
                return "\(error)".contains("ignores Range") && "\(error)".contains(digest.description)
            }
            // Beyond the end through the Range-ignoring server: the same clear error.
            await #expect {
                _ = try await viaProxy.readRange(proxied, digest: digest, range: (size - 1)..<(size + 1))
            } throws: { error in
                guard case let RegistryError.rangeNotSatisfiable(_, _, blobSize, status) = error else { return false }
                return blobSize == size && status == 200
            }
        }
    }
}
