import Foundation
import FerrySystem
import OCI
import Registry
import Testing

extension RegistryTests {
    /// The `ferry` commands that talk to registries: inspect's request footprint, progress
    /// bars on a terminal only, `--json` summaries.
    @Suite struct CLI {
        @Test func inspectOfARemoteImageFetchesOnlyManifestConfigAndBootstrap() async throws {
            let registry = try await RegistryServer()
            defer { registry.stop() }
            let (dir, _, client) = try await pushSourceImage(to: registry)
            let convert = try FerryTool.run(
                [
                    "convert", "docker://\(registry.host)/ferry/src:v1", "docker://\(registry.host)/ferry/conv:v1",
                    "--plain-http", registry.host, "--chunk-size", "64KiB",
                ], in: dir)
            #expect(convert.status == 0, "\(convert.stderr)")
            let converted = try await client.resolveManifest(try RegistryReference(parsing: "\(registry.host)/ferry/conv:v1"))
            let bootstrap = try #require(converted.manifest.layers.last(where: MediaType.isFerryBootstrap))
            let dataBlobs = converted.manifest.layers.map(\.digest).filter { $0 != bootstrap.digest }
            #expect(!dataBlobs.isEmpty)

            let proxy = try FaultProxy(upstream: registry.host, arguments: [])
            defer { proxy.stop() }
            let expected: [(arguments: [String], output: String)] = [
                ([], "bootstrap"), (["--json"], "\"inodes\""),
                (["--tree", "/etc"], "/etc/random.bin"),
                (["--chunks", "/etc/random.bin"], "chunk 31: blob"),
            ]
            for (arguments, output) in expected {
                let inspect = try FerryTool.run(
                    ["inspect", "docker://\(proxy.host)/ferry/conv:v1", "--plain-http", proxy.host] + arguments, in: dir)
                #expect(inspect.status == 0, "\(arguments): \(inspect.stderr)")
                #expect(inspect.stdout.contains(output), "\(arguments): \(inspect.stdout)")
            }
            let blobGets = proxy.requests.filter { $0.hasPrefix("GET /v2/ferry/conv/blobs/") }
            #expect(blobGets.count == 8, "config and bootstrap, four times: \(blobGets)")
            #expect(
                blobGets.allSatisfy {
                    $0.contains(bootstrap.digest.description) || $0.contains(converted.manifest.config.digest.description)
                })
            for data in dataBlobs {
                #expect(!proxy.requests.contains { $0.contains(data.description) }, "inspect fetched data blob \(data)")
            }
        }

        @Test func progressBarsOnATerminalOnlyAndJSONSummaries() async throws {
            let registry = try await RegistryServer()
            defer { registry.stop() }
            let (dir, image, _) = try await pushSourceImage(to: registry)
            let host = registry.host

            // Not a terminal: nothing on stderr.
            let quiet = try FerryTool.run(
                ["pull", "docker://\(host)/ferry/src:v1", "oci:\(dir.file("quiet"))", "--plain-http", host], in: dir)
            #expect(quiet.status == 0 && quiet.stderr.isEmpty, "\(quiet.stderr)")

            // A terminal (script(1) gives the command a pty): one bar per blob, with bytes and rate.
            let script = try #require(Fixtures.which("script"), "util-linux's script is needed for the pty")
            let command = [FerryTool.path, "pull", "docker://\(host)/ferry/src:v1", "oci:\(dir.file("tty"))", "--plain-http", host]
                .joined(separator: " ")
            let tty = try run([script, "-qec", command, "/dev/null"])
            #expect(tty.contains("pull \(image.layerDigest.hex.prefix(12)) ["), "\(tty)")
            #expect(tty.contains("/2.1 MB") && tty.contains("MB/s") && tty.contains("done"), "\(tty)")
            #expect(tty.contains("pull \(image.configDigest.hex.prefix(12)) ["), "\(tty)")

            // --json: pull, push (then again: everything already there), convert.
            struct Copy: Decodable {
                struct Transfer: Decodable {
                    var blobsPulled: Int; var bytesPulled: UInt64; var blobsPushed: Int; var bytesPushed: UInt64; var blobsSkipped: Int
                }
                var manifest: String
                var transfer: Transfer
            }
            let pulled = try FerryTool.run(
                ["pull", "docker://\(host)/ferry/src:v1", "oci:\(dir.file("json"))", "--plain-http", host, "--json"], in: dir)
            let pull = try JSONDecoder().decode(Copy.self, from: Data(pulled.stdout.utf8))
            #expect(pull.manifest == image.manifestDigest.description)
            #expect(pull.transfer.blobsPulled == 2 && pull.transfer.bytesPulled == UInt64(image.layerBytes.count + image.config.count))
            #expect(pulled.stderr.isEmpty)
            for round in 0..<2 {
                let pushed = try FerryTool.run(
                    ["push", "oci:\(dir.file("json"))", "docker://\(host)/ferry/copy:v1", "--plain-http", host, "--json"], in: dir)
                let push = try JSONDecoder().decode(Copy.self, from: Data(pushed.stdout.utf8))
                #expect(push.manifest == image.manifestDigest.description)
                #expect(
                    push.transfer.blobsPushed == (round == 0 ? 2 : 0) && push.transfer.blobsSkipped == (round == 0 ? 0 : 2),
                    "\(pushed.stdout)")
            }
            let converted = try FerryTool.run(
                ["convert", "docker://\(host)/ferry/copy:v1", "oci:\(dir.file("conv"))", "--plain-http", host, "--json"], in: dir)
            struct Convert: Decodable {
                struct Transfer: Decodable { var blobsPulled: Int; var bytesPulled: UInt64 }
                var manifest: String
                var transfer: Transfer
            }
            let summary = try JSONDecoder().decode(Convert.self, from: Data(converted.stdout.utf8))
            #expect(
                summary.transfer.blobsPulled == 2 && summary.transfer.bytesPulled == UInt64(image.layerBytes.count + image.config.count),
                "\(converted.stdout)")
        }
    }
}

/// Pushes a 2 MiB test image to `registry` as `ferry/src:v1`; returns its directory, the image and the client.
private func pushSourceImage(to registry: RegistryServer) async throws -> (TempDir, TestImage, RegistryClient) {
    let dir = try TempDir()
    let image = try TestImage(in: dir, fileSize: 2 << 20)
    let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [registry.host]))
    try await push(image, to: try RegistryReference(parsing: "\(registry.host)/ferry/src:v1"), with: client)
    return (dir, image, client)
}
