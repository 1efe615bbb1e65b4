import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import Testing

/// The CRI v1 calls kubelet makes to start a pod, over containerd's socket (generated from
/// Tools/protos/cri-v1-subset.proto). Pods use the host's network (no CNI needed).
struct CRIClient {
    let socket: String

    private func withClient<T: Sendable>(_ body: @Sendable @escaping (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T) async throws -> T {
        try await withGRPCClient(transport: .http2NIOPosix(target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)) { client in
            try await body(client)
        }
    }

    func pullImage(_ image: String) async throws -> String {
        try await withClient { client in
            let images = Runtime_V1_ImageService.Client(wrapping: client)
            return try await images.pullImage(.with { $0.image = .with { $0.image = image } }).imageRef
        }
    }

    func removeImage(_ image: String) async throws {
        try await withClient { client in
            _ = try await Runtime_V1_ImageService.Client(wrapping: client).removeImage(.with { $0.image = .with { $0.image = image } })
        }
    }

    static func sandboxConfig(name: String, logDirectory: String) -> Runtime_V1_PodSandboxConfig {
        .with {
            $0.metadata = .with { $0.name = name; $0.uid = "uid-\(name)"; $0.namespace = "default" }
            $0.logDirectory = logDirectory
            $0.linux = .with {
                $0.securityContext = .with {
                    $0.namespaceOptions = .with { $0.network = .node; $0.pid = .container; $0.ipc = .pod }
                }
            }
        }
    }

    func runPodSandbox(name: String, logDirectory: String) async throws -> String {
        try await withClient { client in
            let runtime = Runtime_V1_RuntimeService.Client(wrapping: client)
            return try await runtime.runPodSandbox(.with { $0.config = Self.sandboxConfig(name: name, logDirectory: logDirectory) }).podSandboxID
        }
    }

    func createContainer(pod: String, name: String, image: String, command: [String], logPath: String,
                         logDirectory: String) async throws -> String {
        try await withClient { client in
            let runtime = Runtime_V1_RuntimeService.Client(wrapping: client)
            return try await runtime.createContainer(.with {
                $0.podSandboxID = pod
                $0.config = .with {
                    $0.metadata = .with { $0.name = name }
                    $0.image = .with { $0.image = image }
                    $0.command = command
                    $0.logPath = logPath
                }
                $0.sandboxConfig = Self.sandboxConfig(name: "ferry-pod", logDirectory: logDirectory)
            }).containerID
        }
    }

    func startContainer(_ id: String) async throws {
        try await withClient { client in
            _ = try await Runtime_V1_RuntimeService.Client(wrapping: client).startContainer(.with { $0.containerID = id })
        }
    }

    func containerStatus(_ id: String) async throws -> Runtime_V1_ContainerStatus {
        try await withClient { client in
            try await Runtime_V1_RuntimeService.Client(wrapping: client).containerStatus(.with { $0.containerID = id }).status
        }
    }

    /// Polls ContainerStatus until the container has exited (up to 60 s).
    func waitForExit(_ id: String) async throws -> Runtime_V1_ContainerStatus {
        for _ in 0..<600 {
            let status = try await containerStatus(id)
            if status.state == .containerExited { return status }
            try await Task.sleep(for: .milliseconds(100))
        }
        return try await containerStatus(id)
    }

    func stopPodSandbox(_ id: String) async throws {
        try await withClient { client in
            _ = try await Runtime_V1_RuntimeService.Client(wrapping: client).stopPodSandbox(.with { $0.podSandboxID = id })
        }
    }

    func removePodSandbox(_ id: String) async throws {
        try await withClient { client in
            _ = try await Runtime_V1_RuntimeService.Client(wrapping: client).removePodSandbox(.with { $0.podSandboxID = id })
        }
    }
}
