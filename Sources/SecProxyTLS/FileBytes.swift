#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads the files a configuration names (certificates, keys, CAs, CRLs, OCSP responses, ticket keys) whole,
/// so that a missing, unreadable or empty file gets a precise message before OpenSSL sees it.
///
/// Every file is opened with `O_NONBLOCK` and must be a regular file: a FIFO, a device or a directory named
/// by mistake (or by an attacker who can write the config's folder) is refused at once instead of blocking
/// `--check-config`, startup or a reload forever, or feeding it endless bytes.
public enum FileBytes {
    /// Files larger than this are refused; no sane PEM bundle comes close.
    public static let maximumSize = 16 * 1024 * 1024

    /// Why a file cannot be read.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// `open`, `fstat` or `read` failed with this `errno` (`ENOENT`, `EACCES`, …).
        case system(errno: Int32)
        /// It exists but is not a regular file; the payload names what it is ("a directory", "a FIFO", …).
        case notRegular(String)
        /// Larger than the limit it was read with.
        case tooLarge(limit: Int)

        /// "No such file or directory", "a FIFO, not a regular file", "larger than 16 MiB".
        public var description: String {
            switch self {
            case .system(let code): String(cString: strerror(code))
            case .notRegular(let kind): "\(kind), not a regular file"
            case .tooLarge(let limit): "larger than \(FileBytes.sizeText(limit))"
            }
        }
    }

    /// Opens `path` read-only and non-blocking, checks that it is a regular file, and runs `body` with the
    /// descriptor and its `fstat` (so that owner and mode checks look at the very file that is read); the
    /// descriptor is closed when `body` returns.
    /// - Parameters:
    ///   - path: the file.
    ///   - body: what to do with the open file.
    public static func withRegularFile<T>(
        _ path: String,
        _ body: (_ descriptor: Int32, _ info: stat) -> Result<T, Failure>
    ) -> Result<T, Failure> {
        Self.openedPaths?.record(path)
        // O_NONBLOCK: opening a FIFO for reading does not wait for a writer, and no read can block;
        // O_NOCTTY: a terminal device named by mistake does not become the controlling terminal.
        let fd = systemOpen(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { return .failure(.system(errno: errno)) }
        defer { systemClose(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure(.system(errno: errno)) }
        guard info.st_mode & S_IFMT == S_IFREG else { return .failure(.notRegular(kindName(info.st_mode))) }
        return body(fd, info)
    }

    /// The whole file, at most `limit` bytes.
    /// - Parameters:
    ///   - path: the file.
    ///   - limit: the largest size accepted.
    public static func read(_ path: String, limit: Int = maximumSize) -> Result<[UInt8], Failure> {
        withRegularFile(path) { fd, info in self.readAll(fd, info, limit: limit) }
    }

    /// The rest of the open file `fd` (whose `fstat` is `info`), at most `limit` bytes.
    static func readAll(_ fd: Int32, _ info: stat, limit: Int = maximumSize) -> Result<[UInt8], Failure> {
        if Int(info.st_size) > limit { return .failure(.tooLarge(limit: limit)) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(info.st_size))
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { systemRead(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(.system(errno: errno))
            }
            if count == 0 { break }
            // The file may have grown since fstat: the limit holds for what is read.
            if bytes.count + count > limit { return .failure(.tooLarge(limit: limit)) }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return .success(bytes)
    }

    /// `failure` as the TLS loaders word it: "file too large", "cannot read file: No such file or directory".
    static func readError(_ failure: Failure, origin path: String) -> TLSError {
        switch failure {
        case .tooLarge:
            return TLSError.own("file too large", detail: path)
        case .system, .notRegular:
            return TLSError.own("cannot read file: \(failure)", detail: path)
        }
    }

    /// Whether `bytes` contains `needle` (used for PEM markers only; files are small).
    static func contains(_ bytes: [UInt8], _ needle: String) -> Bool {
        bytes.firstRange(of: Array(needle.utf8)) != nil
    }

    /// "a directory", "a FIFO", "a character device", … for a `st_mode`.
    static func kindName(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "a special file"
        }
    }

    /// "16 MiB", "1 MiB", or a byte count.
    static func sizeText(_ bytes: Int) -> String {
        bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
    }
}

extension FileBytes {
    /// Every path opened (by `withRegularFile`, the one place files are opened) while it is set as
    /// `FileBytes.openedPaths` on the current task: how tests see which files a preparation reads, and how often.
    final class OpenedPaths: @unchecked Sendable {
        private let lock = TLSLock()
        private var paths: [String] = []

        init() {}

        /// The paths in the order they were opened, one entry per open.
        var all: [String] { self.lock.withLock { self.paths } }

        /// How many times `path` was opened.
        func count(_ path: String) -> Int { self.lock.withLock { self.paths.filter { $0 == path }.count } }

        func record(_ path: String) { self.lock.withLock { self.paths.append(path) } }
    }

    /// Test seam (nil in the daemon): a task-local, so a test sees the opens of the work it runs itself and
    /// no other test's.
    @TaskLocal static var openedPaths: OpenedPaths?
}

// File-level names for the system calls, which the members `read` of `FileBytes` would otherwise hide.
private func systemOpen(_ path: String, _ flags: Int32) -> Int32 { open(path, flags) }
private func systemClose(_ fd: Int32) { _ = close(fd) }
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int { read(fd, buffer, count) }
