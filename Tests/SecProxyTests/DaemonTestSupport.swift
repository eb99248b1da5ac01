import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SecProxyTestSupport
import XCTest

@testable import SecProxy

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Logs

/// A swift-log handler that keeps every line, for assertions on what the daemon logged.
final class LogRecorder: @unchecked Sendable {
    struct Line: Sendable, CustomStringConvertible {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]

        var description: String {
            "\(level) \(message) " + metadata.keys.sorted().map { "\($0)=\(metadata[$0]!)" }.joined(separator: " ")
        }
    }

    private let lock = NIOLock()
    private var recorded: [Line] = []

    var lines: [Line] { lock.withLock { recorded } }

    func messages(_ message: String) -> [Line] { lines.filter { $0.message == message } }

    var tail: String { lines.suffix(30).map(\.description).joined(separator: "\n") }

    func append(_ line: Line) { lock.withLock { recorded.append(line) } }

    /// A logger whose lines land here (at `level` and above).
    func logger(level: Logger.Level = .debug) -> Logger {
        var logger = Logger(label: "secproxy-test") { _ in Handler(recorder: self) }
        logger.logLevel = level
        return logger
    }

    struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var fields: [String: String] = [:]
            for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
                fields[key] = "\(value)"
            }
            recorder.append(Line(level: event.level, message: "\(event.message)", metadata: fields))
        }
    }
}

// MARK: - systemd's notify socket

/// A unix datagram socket bound where `NOTIFY_SOCKET` points: records every datagram the daemon sends
/// (a thread blocks in recv with a short timeout, so that `close()` ends it promptly).
final class NotifyRecorder: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let lock = NIOLock()
    private var received: [(text: String, at: ContinuousClock.Instant)] = []
    private var stopRequested = false
    private let done = NIOLockedValueBox(false)

    init(path: String) throws {
        self.path = path
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SubprocessError("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw SubprocessError("path too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw SubprocessError("bind \(path): \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in receiveLoop() }
        thread.name = "notify-recorder"
        thread.start()
    }

    private func receiveLoop() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !lock.withLock({ stopRequested }) {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count >= 0 {
                let text = String(decoding: buffer[0..<count], as: UTF8.self)
                lock.withLock { received.append((text, .now)) }
            } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                break
            }
        }
        done.withLockedValue { $0 = true }
    }

    /// Every datagram so far.
    var datagrams: [String] { lock.withLock { received.map(\.text) } }

    /// Every datagram so far with its arrival time.
    var timed: [(text: String, at: ContinuousClock.Instant)] { lock.withLock { received } }

    func close() async {
        lock.withLock { stopRequested = true }
        try? await eventually(2, "the notify reader to end") { self.done.withLockedValue { $0 } }
        Glibc.close(fd)
        unlink(path)
    }
}

extension String {
    /// Whether one line of this notify datagram is exactly `assignment`.
    func hasAssignment(_ assignment: String) -> Bool {
        split(separator: "\n").contains { $0 == assignment }
    }
}

// MARK: - The daemon, in this process

/// A `Daemon` run inside the test process on a configuration file, with its log recorded.
final class InProcessDaemon: @unchecked Sendable {
    let daemon: Daemon
    let logs: LogRecorder
    let path: String
    private let task: Task<Int32, Never>
    private let finished = NIOLockedValueBox<Int32?>(nil)

    /// Prepares `path` (failing the test on errors), starts the daemon and waits for `ready`.
    init(path: String, environment: [String: String] = [:], options: Daemon.Options = Daemon.Options()) async throws {
        self.path = path
        let result = Preparation.prepare(path: path)
        guard let prepared = result.prepared else {
            throw SubprocessError("configuration invalid:\n" + result.diagnostics.map { "\($0)" }.joined(separator: "\n"))
        }
        let logs = LogRecorder()
        self.logs = logs
        var options = options
        options.environment = environment
        options.handlesSignals = false
        daemon = Daemon(
            path: path, prepared: prepared, logger: logs.logger(), logSettings: LineLogHandler.Settings(),
            options: options
        )
        let daemon = self.daemon
        let finished = self.finished
        task = Task {
            let code = await daemon.run()
            finished.withLockedValue { $0 = code }
            return code
        }
        try await eventually(20, "msg=ready (or the end of run())", state: { logs.tail }) {
            !logs.messages("ready").isEmpty || finished.withLockedValue({ $0 }) != nil
        }
    }

    /// Whether `run()` returned.
    var hasFinished: Bool { finished.withLockedValue { $0 } != nil }

    /// The exit code, once `run()` returned.
    func exitCode(timeout: TimeInterval = 15) async throws -> Int32 {
        try await withDeadline(timeout, "the daemon's run() to return") { [task] in await task.value }
    }

    func adminPort() async throws -> Int {
        let port = await daemon.adminAddress()?.port
        return try XCTUnwrap(port, "no admin endpoint\n\(logs.tail)")
    }

    func port(of listener: String) async throws -> Int {
        let port = await daemon.localAddress(ofListener: listener)?.port
        return try XCTUnwrap(port, "listener \(listener) not bound\n\(logs.tail)")
    }

    /// Stops (as on SIGTERM) and waits for `run()`.
    func stop() async throws -> Int32 {
        daemon.requestStop()
        return try await exitCode()
    }
}

