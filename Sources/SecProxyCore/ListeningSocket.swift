#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Makes a listening TCP socket the way the listener wants it, as a plain descriptor, so that the same
/// descriptor can be handed to NIO, passed to systemd's file-descriptor store, or come from socket
/// activation.
public enum ListeningSocket {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The listen backlog.
    static let backlog: Int32 = 4096

    /// A socket bound to `address` and listening; the caller owns the descriptor.
    public static func make(address: SocketAddress) throws -> CInt {
        let family = address.protocol
        let fd = socket(family.rawValue, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.withSockAddr { pointer, length in
            bind(fd, pointer, socklen_t(length))
        }
        guard bound == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "bind \(address): \(reason)")
        }
        guard listen(fd, backlog) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "listen \(address): \(reason)")
        }
        return fd
    }

    /// Makes an inherited descriptor (socket activation) listen with our backlog and close on exec.
    public static func adopt(_ fd: CInt) throws {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        guard listen(fd, backlog) == 0 else {
            throw Failure(description: "inherited socket \(fd) cannot listen: \(String(cString: strerror(errno)))")
        }
    }
}
