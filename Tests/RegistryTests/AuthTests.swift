import Foundation
import FerrySystem
import OCI
import Registry
import Testing

/// What a round trip through the `ferry` CLI produced.
struct RoundTrip {
    var convertedManifest: String
    /// Everything the CLI wrote to stderr (with `--registry-log trace`/`debug`).
    var stderr: String
}

/// `ferry convert docker://SRC docker://DST`, `ferry pull` of DST, `ferry check` of the pull,
/// and `ferry inspect docker://DST`, each expected to succeed.
func convertPullCheck(
    host: String, source: String, destination: String, credentials: [String],
    environment: [String: String] = [:], dir: TempDir
) throws -> RoundTrip {
    var stderr = ""
    let common = ["--plain-http", host] + credentials
    let convert = try FerryTool.run(
        [
            "convert", "docker://\(host)/\(source)", "docker://\(host)/\(destination)", "--json",
            "--registry-log", "trace",
        ] + common, environment: environment, in: dir)
    stderr += convert.stderr
    #expect(convert.status == 0, "convert: \(convert.stderr.suffix(2000))")
    struct ConvertOutput: Decodable {
        struct Transfer: Decodable { var blobsPulled: Int; var blobsPushed: Int; var bytesPushed: UInt64 }
        var manifest: String
        var transfer: Transfer
    }
    let converted = try JSONDecoder().decode(ConvertOutput.self, from: Data(convert.stdout.utf8))
    #expect(converted.transfer.blobsPulled >= 1 && converted.transfer.blobsPushed >= 2 && converted.transfer.bytesPushed > 0)

    let layout = dir.file("pulled-\(UUID().uuidString)")
    let pull = try FerryTool.run(
        ["pull", "docker://\(host)/\(destination)", "oci:\(layout)", "--json", "--registry-log", "debug"] + common,
        environment: environment, in: dir)
    stderr += pull.stderr
    #expect(pull.status == 0, "pull: \(pull.stderr.suffix(2000))")
    #expect(pull.stdout.contains(converted.manifest))
    let check = try FerryTool.run(["check", "oci:\(layout)"], in: dir)
    #expect(check.status == 0 && check.stdout.hasPrefix("ok:"), "check: \(check.stdout) \(check.stderr)")
    let inspect = try FerryTool.run(["inspect", "docker://\(host)/\(destination)"] + common, environment: environment, in: dir)
    stderr += inspect.stderr
    #expect(inspect.status == 0 && inspect.stdout.contains("bootstrap"), "inspect: \(inspect.stdout) \(inspect.stderr)")
    return RoundTrip(convertedManifest: converted.manifest, stderr: stderr)
}

/// A registry that trusts `tokens`, and an image pushed to it as `ferry/src:v1` by a client that
/// has the token server's credentials in an auth file. The caller stops the registry.
struct TokenSetup {
    let registry: RegistryServer
    let dir: TempDir
    let image: TestImage
    let authFile: String
    let client: RegistryClient
    let source: RegistryReference

    init(tokens: TokenServer, fileSize: Int) async throws {
        registry = try await RegistryServer(
            auth: .token(
                realm: tokens.realm, service: TokenServer.service,
                issuer: TokenServer.issuer, certificate: tokens.certificate))
        do {
            dir = try TempDir()
            image = try TestImage(in: dir, fileSize: fileSize)
            authFile = dir.file("auth.json")
            try writeAuthFile(authFile, host: registry.host, user: TokenServer.user, password: TokenServer.password)
            client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [registry.host], authFile: authFile))
            source = try RegistryReference(parsing: "\(registry.host)/ferry/src:v1")
            try await push(image, to: source, with: client)
        } catch {
            registry.stop()
            throw error
        }
    }
}

/// No password, no `user:password` in base64, no Authorization header, no JWT in `text`.
func expectNoSecrets(_ text: String, user: String, password: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let basic = Data("\(user):\(password)".utf8).base64EncodedString()
    for secret in [password, basic, "Authorization:", "Bearer ey"] {
        #expect(!text.contains(secret), "stderr reveals \"\(secret)\"", sourceLocation: sourceLocation)
    }
}

extension RegistryTests {
    @Suite struct Auth {
        static let user = "bob"
        static let password = "s3cr3t-Pa55word"

        @Test func htpasswdBasicAuthPullConvertPushFromEveryCredentialSource() async throws {
            let registry = try await RegistryServer(auth: .htpasswd(user: Self.user, password: Self.password))
            defer { registry.stop() }
            let dir = try TempDir()
            let image = try TestImage(in: dir, fileSize: 1 << 20)
            let authFile = dir.file("auth.json")
            try writeAuthFile(authFile, host: registry.host, user: Self.user, password: Self.password)

            // Without credentials: refused, and the error says where credentials were looked for.
            let anonymous = RegistryClient(options: RegistryOptions(plainHTTPHosts: [registry.host], authFile: dir.file("none.json")))
            let source = try RegistryReference(parsing: "\(registry.host)/ferry/src:v1")
            await #expect {
                try await push(image, to: source, with: anonymous)
            } throws: { error in
                guard case RegistryError.unauthorized = error else { return false }
                return "\(error)".contains("no credentials for \(registry.host)")
            }

            let client = RegistryClient(options: RegistryOptions(plainHTTPHosts: [registry.host], authFile: authFile))
            try await push(image, to: source, with: client)
            #expect(try await client.fetchBlobBytes(source, digest: image.layerDigest) == image.layerBytes)

            // --authfile
            var trip = try convertPullCheck(
                host: registry.host, source: "ferry/src:v1", destination: "ferry/conv:v1",
                credentials: ["--authfile", authFile], dir: dir)
            #expect(trip.stderr.contains("-> 200"), "trace logging is on, so the secret check below means something")
            expectNoSecrets(trip.stderr, user: Self.user, password: Self.password)
            // $REGISTRY_AUTH_FILE
            trip = try convertPullCheck(
                host: registry.host, source: "ferry/src:v1", destination: "ferry/conv-env:v1",
                credentials: [], environment: ["REGISTRY_AUTH_FILE": authFile, "XDG_RUNTIME_DIR": dir.file("xdg")],
                dir: dir)
            expectNoSecrets(trip.stderr, user: Self.user, password: Self.password)
            // ~/.docker/config.json
            let home = dir.file("home")
            try FileManager.default.createDirectory(atPath: home + "/.docker", withIntermediateDirectories: true)
            try writeAuthFile(home + "/.docker/config.json", host: registry.host, user: Self.user, password: Self.password)
            trip = try convertPullCheck(
                host: registry.host, source: "ferry/src:v1", destination: "ferry/conv-home:v1",
                credentials: [],
                environment: [
                    "HOME": home, "REGISTRY_AUTH_FILE": "", "XDG_RUNTIME_DIR": dir.file("xdg"),
                    "DOCKER_CONFIG": home + "/.docker",
                ],
                dir: dir)
            expectNoSecrets(trip.stderr, user: Self.user, password: Self.password)

            // skopeo, an independent client, reads what ferry pushed, with --creds and --authfile.
            let skopeo = try #require(Fixtures.which("skopeo"), "skopeo is installed by Tools/setup")
            let json = try run([
                skopeo, "inspect", "--tls-verify=false", "--creds", "\(Self.user):\(Self.password)",
                "docker://\(registry.host)/ferry/conv:v1",
            ])
            #expect(json.contains("\"Layers\""))
            _ = try run([skopeo, "inspect", "--tls-verify=false", "--authfile", authFile, "docker://\(registry.host)/ferry/conv-env:v1"])

            // A wrong password: a clear refusal naming the registry and repository, and no secret.
            let wrong = dir.file("wrong.json")
            try writeAuthFile(wrong, host: registry.host, user: Self.user, password: "not-" + Self.password)
            let refused = try FerryTool.run(
                [
                    "pull", "docker://\(registry.host)/ferry/conv:v1", "oci:\(dir.file("refused"))",
                    "--plain-http", registry.host, "--authfile", wrong, "--registry-log", "trace",
                ], in: dir)
            #expect(refused.status != 0)
            #expect(
                refused.stderr.contains("access denied (HTTP 401)") && refused.stderr.contains("\(registry.host)/ferry/conv"),
                "\(refused.stderr)")
            expectNoSecrets(refused.stderr, user: Self.user, password: "not-" + Self.password)
        }

        @Test func tokenAuthWithTwoSecondTokensKeepsALongPullWorking() async throws {
            let tokens = try TokenServer(lifetime: 2)
            defer { tokens.stop() }
            let setup = try await TokenSetup(tokens: tokens, fileSize: 2 << 20)
            defer { setup.registry.stop() }
            let (registry, dir, image, authFile, client, source) = (setup.registry, setup.dir, setup.image, setup.authFile, setup.client, setup.source)

            // Anonymous: pull-only tokens; pulling works, pushing is refused.
            let anonymous = RegistryClient(options: RegistryOptions(plainHTTPHosts: [registry.host], authFile: dir.file("none.json")))
            #expect(try await anonymous.resolveManifest(source).digest == image.manifestDigest)
            await #expect(throws: RegistryError.self) {
                try await anonymous.pushBlob(try RegistryReference(parsing: "\(registry.host)/ferry/other:v1"), bytes: [1, 2, 3])
            }

            // A pull that outlives several tokens: ranges every 250 ms, each answered exactly,
            // until two tokens have expired and been renewed. Driven by renewals, not by a clock:
            // on a loaded machine a read may take longer than a token lives (CI failed a 5-second
            // version that saw one renewal). A client that never renewed would fail every read
            // after the first token's 2 s, and one that renewed without need would not be seen
            // here but in `tokenRejectedBeforeItsAdvertisedExpiryIsRefreshedOn401`.
            let before = try tokens.stats()["issued"] ?? 0
            let source2 = RegistryBlobSource(client: client, repository: source)
            var reads = 0, renewed = 0
            while renewed < 2 && reads < 400 {
                let offset = UInt64(reads * 4096 % (image.layerBytes.count - 4096))
                let bytes = try await source2.read(blob: image.layerDigest, range: offset..<(offset + 4096))
                #expect(bytes == Array(image.layerBytes[Int(offset)..<Int(offset) + 4096]))
                reads += 1
                try await Task.sleep(for: .milliseconds(250))
                renewed = (try tokens.stats()["issued"] ?? 0) - before
            }
            #expect(renewed >= 2, "2-second tokens must be renewed during a long pull (\(renewed) issued in \(reads) reads)")
            #expect(try tokens.stats()["post"] ?? 0 > 0, "with credentials, tokens come from the OAuth2 POST form")

            let trip = try convertPullCheck(
                host: registry.host, source: "ferry/src:v1", destination: "ferry/conv:v1",
                credentials: ["--authfile", authFile], dir: dir)
            expectNoSecrets(trip.stderr, user: TokenServer.user, password: TokenServer.password)
            let skopeo = try #require(Fixtures.which("skopeo"), "skopeo is installed by Tools/setup")
            let json = try run([skopeo, "inspect", "--tls-verify=false", "--authfile", authFile, "docker://\(registry.host)/ferry/conv:v1"])
            #expect(json.contains("\"Layers\""))
        }

        @Test(arguments: ["rsa", "ec"])
        func tokenRejectedBeforeItsAdvertisedExpiryIsRefreshedOn401(keyType: String) async throws {
            // The token service says 1 hour; the registry stops accepting it after 2 s.
            // RS256 and ES256 signatures both pass the registry's check.
            let tokens = try TokenServer(keyType: keyType, lifetime: 2, advertise: 3600, noPost: true)
            defer { tokens.stop() }
            let setup = try await TokenSetup(tokens: tokens, fileSize: 256 << 10)
            defer { setup.registry.stop() }
            let (image, client, ref) = (setup.image, setup.client, setup.source)
            #expect(try await client.readRange(ref, digest: image.layerDigest, range: 0..<100) == Array(image.layerBytes[0..<100]))
            let before = try tokens.stats()["issued"] ?? 0
            try await Task.sleep(for: .milliseconds(3500))
            #expect(try await client.readRange(ref, digest: image.layerDigest, range: 100..<200) == Array(image.layerBytes[100..<200]))
            #expect((try tokens.stats()["issued"] ?? 0) == before + 1, "one new token after the registry's 401")
            #expect(try tokens.stats()["post"] == 0, "a GET-only token service (POST answers 405) is asked by GET")
        }
    }
}
