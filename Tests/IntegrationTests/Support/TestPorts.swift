import FerrySystem
import Synchronization

/// TCP ports for the servers tests start (registries, proxies, ferryd's peer and metrics
/// listeners). Ports come from below the kernel's ephemeral range (32768–60999 by default, where
/// every outgoing connection of every test takes its source port: a port picked at random there
/// was once taken by a curl of another test between the pick and ferryd's bind), each handed out
/// once per test process, and each found free on 127.0.0.1 when handed out.
enum TestPorts {
    private static let range = 12000 ..< 32000
    private static let next = Mutex(Int.random(in: 0 ..< 8000))

    /// The first of `count` consecutive ports, none used by another test of this process and
    /// each free at this moment.
    static func reserve(_ count: Int = 1) -> Int {
        while true {
            let first = next.withLock { next -> Int in
                let first = range.lowerBound + next % (range.count - count)
                next += count
                return first
            }
            let free = (first ..< first + count).allSatisfy { port in
                guard let (socket, _) = try? TCPSocket.listen(host: "127.0.0.1", port: UInt16(port)) else { return false }
                try? socket.close()
                return true
            }
            if free { return first }
        }
    }
}
