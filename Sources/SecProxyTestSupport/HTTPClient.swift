import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One response as curl received it.
public struct HTTPReply: Sendable, CustomStringConvertible {
    public var status: Int
    /// Header names lowercased.
    public var headers: [String: String]
    public var body: String

    public var description: String { "HTTP \(status) \(headers) \(body.debugDescription)" }
}

/// `curl` against 127.0.0.1:`port` (a real HTTP client).
public func curl(_ port: Int, _ path: String, method: String = "GET", extra: [String] = []) throws -> HTTPReply {
    guard let curl = Subprocess.which("curl") else { throw SubprocessError("curl is not installed (apt-get install curl)") }
    var arguments = ["-s", "-i", "--max-time", "10", "-X", method]
    if method == "HEAD" { arguments = ["-s", "-I", "--max-time", "10"] }
    let run = try Subprocess.run(curl, arguments + extra + ["http://127.0.0.1:\(port)\(path)"], timeout: 20)
    guard run.exitCode == 0 else { throw SubprocessError("curl failed (\(run.exitCode)): \(run.stderr)") }
    return try parseHTTP(run.stdout)
}

/// Splits a raw HTTP/1.1 response.
public func parseHTTP(_ raw: String) throws -> HTTPReply {
    // The subprocess output arrives with line ends normalized.
    let text = raw.replacingOccurrences(of: "\r\n", with: "\n")
    guard let end = text.range(of: "\n\n") else { throw SubprocessError("no end of head in: \(text.debugDescription)") }
    let lines = text[..<end.lowerBound].components(separatedBy: "\n")
    let statusParts = lines[0].split(separator: " ")
    guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
        throw SubprocessError("bad status line: \(lines[0])")
    }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return HTTPReply(status: status, headers: headers, body: String(text[end.upperBound...]))
}

/// A plain TCP client on a blocking socket with a receive timeout: sends raw bytes, reads what comes back.
public final class RawClient {
    public let fd: Int32

    public init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SubprocessError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw SubprocessError("connect 127.0.0.1:\(port): \(message)")
        }
    }

    deinit { Glibc.close(fd) }

    public func send(_ text: String) throws {
        try send(Array(text.utf8))
    }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw SubprocessError("send: \(String(cString: strerror(errno)))") }
            offset += n
        }
    }

    /// Reads until `count` bytes arrived, the peer closed or `timeout` seconds passed.
    public func read(count: Int, timeout: TimeInterval) -> String {
        let deadline = Deadline(seconds: timeout)
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while bytes.count < count, !deadline.hasPassed {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(max(1, deadline.remaining * 1000))) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, count - bytes.count), 0) }
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads until the peer closes or `timeout` seconds pass; returns the bytes and whether it closed.
    public func readUntilClosed(timeout: TimeInterval) -> (text: String, closed: Bool) {
        let deadline = Deadline(seconds: timeout)
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !deadline.hasPassed {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(max(1, deadline.remaining * 1000)))
            if ready <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return (String(decoding: bytes, as: UTF8.self), true) }
            bytes += buffer[0..<n]
        }
        return (String(decoding: bytes, as: UTF8.self), false)
    }
}

