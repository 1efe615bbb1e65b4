import ContainerdAPI
public import FerrySystem
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
public import Logging

/// The snapshots API on a Unix socket: bound (mode 0600) when created, so containerd can connect
/// as soon as ferryd says it is ready; served until `stop()`.
public final class SnapshotterServer: Sendable {
    public let socketPath: String
    private let server: GRPCServer<HTTP2ServerTransport.Posix>

    /// Binds `socketPath` (replacing a stale socket file) and prepares the server.
    public init(socketPath: String, snapshotter: Snapshotter, logger: Logger) throws {
        self.socketPath = socketPath
        try FileManager.default.createDirectory(atPath: (socketPath as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // Bound here with the mode set before listen(2); gRPC takes the descriptor over.
        let listener = try UnixSocket.listen(at: socketPath, permissions: 0o600)
        server = GRPCServer(transport: .http2NIOPosix(listeningSocketDescriptor: Int(listener.rawValue), transportSecurity: .plaintext),
                            services: [SnapshotsService(snapshotter: snapshotter, logger: logger)])
    }

    /// Serves until `stop()`.
    public func serve() async throws { try await server.serve() }

    /// Stops taking calls; calls in flight finish.
    public func stop() { server.beginGracefulShutdown() }
}
