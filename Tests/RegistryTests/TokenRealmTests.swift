import Foundation
import OCI
import Registry
import Testing

/// Where a registry may send Ferry's credentials: a token realm over plain http on another host
/// is refused before anything is sent, and a token service's redirect is not followed (the OAuth2
/// form carries the password; curl re-POSTs it on a 307). Before, both were followed.
@Suite(.serialized) struct TokenRealmTests {
    final class DeceitfulRegistry: @unchecked Sendable {
        let dir: TempDir
        let process: ServerProcess
        let port: Int
        var host: String { "127.0.0.1:\(port)" }
        init(realm: String) throws {
            dir = try TempDir()
            process = try ServerProcess(["python3", Fixtures.directory + "/deceitful_registry.py", "--port-file", dir.file("port"), "--realm", realm],
                                        log: dir.file("log"))
            port = try process.waitForPortFile(dir.file("port"))
        }
        func stats() throws -> [String: Int] {
            let text = try run(["curl", "-s", "-m", "10", "http://\(host)/_stats"])
            return (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Int]) ?? [:]
        }
    }

    static func client(for registry: DeceitfulRegistry) throws -> RegistryClient {
        let authFile = registry.dir.file("auth.json")
        try writeAuthFile(authFile, host: registry.host, user: "alice", password: "wonderland")
        var options = RegistryOptions(plainHTTPHosts: [registry.host], authFile: authFile)
        options.retry.maxAttempts = 1
        return RegistryClient(options: options)
    }

    @Test func aPlainHTTPRealmOnAnotherHostIsRefused() async throws {
        let registry = try DeceitfulRegistry(realm: "http://127.0.0.2:{port}/token")
        defer { registry.process.stop() }
        let client = try Self.client(for: registry)
        await #expect {
            _ = try await client.resolveManifest(try RegistryReference(parsing: "\(registry.host)/x/y:v1"))
        } throws: { error in
            let text = "\(error)"
            return text.contains("not https") && text.contains("127.0.0.2") && !text.contains("wonderland")
        }
        #expect(try registry.stats()["token"] == 0)
    }

    @Test func aTokenServiceRedirectIsNotFollowed() async throws {
        let registry = try DeceitfulRegistry(realm: "http://127.0.0.1:{port}/token")
        defer { registry.process.stop() }
        let client = try Self.client(for: registry)
        await #expect(throws: RegistryError.self) {
            _ = try await client.resolveManifest(try RegistryReference(parsing: "\(registry.host)/x/y:v1"))
        }
        let stats = try registry.stats()
        #expect((stats["token"] ?? 0) >= 1, "the token service was asked: \(stats)")
        #expect(stats["stolen"] == 0, "the redirect was not followed: \(stats)")
    }
}
