#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads small configuration files (certificates, keys, CAs, CRLs) whole, so that a missing,
/// unreadable or empty file gets a precise message before OpenSSL sees it.
enum FileBytes {
    /// Files larger than this are refused; no sane PEM bundle comes close.
    static let maximumSize = 16 * 1024 * 1024

    static func contents(of path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw TLSError.own("cannot read file: \(String(cString: strerror(errno)))", detail: path)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw TLSError.own("cannot read file: \(String(cString: strerror(errno)))", detail: path)
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > maximumSize {
                throw TLSError.own("file too large", detail: path)
            }
        }
        return bytes
    }

    /// Whether `bytes` contains `needle` (used for PEM markers only; files are small).
    static func contains(_ bytes: [UInt8], _ needle: String) -> Bool {
        bytes.firstRange(of: Array(needle.utf8)) != nil
    }
}
