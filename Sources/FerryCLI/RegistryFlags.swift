import ArgumentParser
import Foundation
import Registry

/// Flags shared by commands that talk to registries.
struct RegistryFlags: ParsableArguments {
    @Option(name: .customLong("plain-http"), help: "Registry host[:port] to reach over plain HTTP (repeatable).")
    var plainHTTP: [String] = []
    @Option(help: "Registry host[:port] whose TLS certificate is not verified (repeatable).") var insecure: [String] = []
    @Option(help: "Extra CA certificates (PEM) for registries.") var caCert: String?
    @Option(help: "Credentials file (Docker/containers auths format) instead of the usual search path.") var authfile: String?

    func options() -> RegistryOptions {
        RegistryOptions(plainHTTPHosts: Set(plainHTTP), insecureHosts: Set(insecure), caCertificatePath: caCert, authFile: authfile)
    }
}

/// A private scratch directory for downloads and conversion output on its way to a registry.
func makeScratchDirectory() throws -> String {
    let base = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/var/tmp"
    let path = "\(base)/ferry-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    return path
}
