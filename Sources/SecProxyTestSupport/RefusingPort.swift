import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A loopback TCP port where nothing listens: connects to it are refused at once. The port is held by a bound,
/// non-listening socket, so no other program can take it while this value lives (a "backend that is down").
public final class RefusingPort: @unchecked Sendable {
    /// The reserved port.
    public let port: Int
    private var fd: Int32

    /// Binds a socket on 127.0.0.1 port 0 without listening.
    public init() throws {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw SubprocessError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else {
            let message = String(cString: strerror(errno))
            Self.closeDescriptor(fd)
            throw SubprocessError("bind: \(message)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// `127.0.0.1:PORT`.
    public var address: String { "127.0.0.1:\(port)" }

    /// Releases the port.
    public func release() {
        if fd >= 0 {
            Self.closeDescriptor(fd)
            fd = -1
        }
    }

    private static func closeDescriptor(_ fd: Int32) {
        #if canImport(Glibc)
        _ = Glibc.close(fd)
        #else
        _ = Darwin.close(fd)
        #endif
    }

    deinit { release() }
}

/// Holds a loopback port with a listening socket that never accepts (for "address already in use").
public final class OccupiedPort: @unchecked Sendable {
    /// The port held.
    public let port: Int
    private let refusing: RefusingPort

    /// Binds and listens on 127.0.0.1 port 0.
    public init() throws {
        refusing = try RefusingPort()
        port = refusing.port
        guard refusing.listenNow() == 0 else { throw SubprocessError("listen: \(String(cString: strerror(errno)))") }
    }

    /// `127.0.0.1:PORT`.
    public var address: String { "127.0.0.1:\(port)" }
}

extension RefusingPort {
    fileprivate func listenNow() -> Int32 { listen(fd, 16) }
}
