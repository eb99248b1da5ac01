import Foundation
import SecProxyTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The systemd notification protocol as systemd sees it (SPEC §3 systemd, Reload): the daemon runs with
/// `NOTIFY_SOCKET` pointing at a datagram socket bound by the test, and every datagram it sends is recorded.
final class NotifyTests: ProxyTestCase {
    private var sockets: [NotifySocket] = []
    private var notifiedProxies: [ProxyProcess] = []

    override func tearDown() {
        for proxy in notifiedProxies { proxy.terminate() }
        notifiedProxies = []
        for socket in sockets { socket.close() }
        sockets = []
        super.tearDown()
    }

    // MARK: - World building

    /// A notify socket at a path in the test's temporary directory.
    private func pathSocket() throws -> NotifySocket {
        let socket = try NotifySocket(path: temporary.file("notify.sock"))
        sockets.append(socket)
        return socket
    }

    /// A notify socket in the abstract namespace (`@secproxy-test-<random>`).
    private func abstractSocket() throws -> NotifySocket {
        let socket = try NotifySocket(abstractName: "secproxy-test-\(UUID().uuidString.prefix(12))")
        sockets.append(socket)
        return socket
    }

    /// A loopback port that was free a moment ago (so a connect can be tried the instant READY=1 arrives,
    /// before the `msg=listening` line is read).
    private func freePort() throws -> Int {
        let reserved = try RefusingPort()
        let port = reserved.port
        reserved.release()
        return port
    }

    /// Writes `config` to `secproxy.toml` and starts the daemon with `NOTIFY_SOCKET` (and `WATCHDOG_USEC` when
    /// given); does not wait for anything.
    private func startNotified(
        _ config: ProxyConfig,
        socket: NotifySocket,
        watchdogUsec: Int? = 200_000
    ) throws -> (ProxyProcess, String) {
        let path = try config.write(to: temporary)
        var environment: [String: String?] = ["NOTIFY_SOCKET": socket.address]
        if let watchdogUsec { environment["WATCHDOG_USEC"] = String(watchdogUsec) }
        let proxy = try ProxyProcess(configPath: path, environment: environment)
        notifiedProxies.append(proxy)
        try proxy.start()
        return (proxy, path)
    }

    /// A plain listener named `name` on `port` (0: any).
    private func plainListener(
        _ name: String,
        port: Int = 0,
        backends: [String],
        settings: [String: TOMLValue] = [:]
    ) -> ProxyConfig.Listener {
        var listener = ProxyConfig.Listener.plain(name, backends: backends, settings: settings)
        listener.listen = "127.0.0.1:\(port)"
        return listener
    }

    /// One echo round trip through a new plain connection; returns the client's result.
    @discardableResult
    private func assertEchoes(
        _ port: Int,
        _ text: String,
        _ proxy: ProxyProcess,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws -> TransferResult {
        let result = try python.transfer(
            ClientOptions(port: port, tls: false),
            payload: .text(text),
            timeout: 10
        )
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())", file: file, line: line)
        XCTAssertEqual(result.receivedText, text, file: file, line: line)
        return result
    }

    /// Waits for the `READY=1` datagram that ends the start-up and checks it carries `STATUS=0 connections open`.
    @discardableResult
    private func waitForStartupReady(
        _ socket: NotifySocket,
        _ proxy: ProxyProcess,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws -> NotifySocket.Datagram {
        let ready = try socket.waitFor(after: -1, timeout: 20, "READY=1", state: { proxy.outputTail() }) {
            $0.has("READY=1")
        }
        XCTAssertEqual(
            ready.value("STATUS"),
            "0 connections open",
            "READY=1 must carry STATUS in the same datagram: \(ready)",
            file: file,
            line: line
        )
        return ready
    }

    // MARK: - Tests

    func testReadyWatchdogStatusReloadAndStop() throws {
        let socket = try pathSocket()
        let echo = try echoBackend()
        let port = try freePort()
        let (proxy, _) = try startNotified(
            ProxyConfig(listeners: [plainListener("web", port: port, backends: [echo.address])]),
            socket: socket
        )

        // READY=1 (with STATUS) once the listener is bound: a connect tried the moment it arrives succeeds.
        let ready = try waitForStartupReady(socket, proxy)
        XCTAssertTrue(
            tcpConnects(port: port),
            "READY=1 arrived but nothing accepts on 127.0.0.1:\(port)\n\(proxy.outputTail())"
        )
        // The log pipe may lag behind the datagram: wait for the lines before reading them.
        try proxy.waitUntilReady()
        XCTAssertEqual(try proxy.address(of: "web").port, port)

        // WATCHDOG=1 every half WATCHDOG_USEC (100 ms): the first within a second, and a steady beat after it.
        let firstWatchdog = try socket.waitFor(after: ready.index, timeout: 1, "WATCHDOG=1 after READY=1") {
            $0.has("WATCHDOG=1")
        }
        let secondWatchdog = try socket.waitFor(after: firstWatchdog.index, timeout: 1, "a second WATCHDOG=1") {
            $0.has("WATCHDOG=1")
        }
        let thirdWatchdog = try socket.waitFor(after: secondWatchdog.index, timeout: 1, "a third WATCHDOG=1") {
            $0.has("WATCHDOG=1")
        }
        XCTAssertLessThan(
            firstWatchdog.received.duration(to: thirdWatchdog.received),
            .milliseconds(1500),
            "WATCHDOG=1 should come about every 100 ms: \(socket.datagrams)"
        )

        // A connection opens: STATUS=1 connections open within ~2 s.
        let driver = try driver()
        let beforeOpen = socket.lastIndex
        let opened = try driver.open("held", ClientOptions(port: port, tls: false))
        XCTAssertTrue(opened.ok, "\(opened)\n\(proxy.outputTail())")
        let echoReply = try driver.echo("held", "still here")
        XCTAssertTrue(echoReply.ok, "\(echoReply)")
        let status1 = try socket.waitFor(after: beforeOpen, timeout: 2.5, "STATUS=1 connections open") {
            $0.value("STATUS") == "1 connections open"
        }
        XCTAssertFalse(status1.has("READY=1"), "a count change is a STATUS-only datagram: \(status1)")

        // SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, in µs), then READY=1.
        let beforeReload = socket.lastIndex
        proxy.send(signal: SIGHUP)
        let reloading = try socket.waitFor(
            after: beforeReload, timeout: 10, "RELOADING=1", state: { proxy.outputTail() }
        ) {
            $0.has("RELOADING=1")
        }
        let monotonic = try XCTUnwrap(
            reloading.value("MONOTONIC_USEC").flatMap(UInt64.init),
            "RELOADING=1 must carry a numeric MONOTONIC_USEC in the same datagram: \(reloading)"
        )
        let now = monotonicMicroseconds()
        XCTAssertLessThanOrEqual(monotonic, now, "MONOTONIC_USEC is in the future: \(monotonic) > \(now)")
        XCTAssertLessThan(
            now - min(now, monotonic),
            10_000_000,
            "MONOTONIC_USEC is not CLOCK_MONOTONIC: \(monotonic) vs \(now)"
        )
        let reloaded = try socket.waitFor(after: reloading.index, timeout: 10, "READY=1 after RELOADING=1") {
            $0.has("READY=1")
        }
        XCTAssertEqual(reloaded.value("STATUS"), "1 connections open", "\(reloaded)")
        try proxy.waitForMessage("configuration reloaded")
        XCTAssertTrue(try driver.echo("held", "across the reload").ok, "the held connection must survive the reload")
        try assertEchoes(port, "after reload", proxy)

        // The connection closes: STATUS=0 connections open within ~2 s.
        let beforeClose = socket.lastIndex
        try driver.close("held")
        let status0 = try socket.waitFor(after: beforeClose, timeout: 2.5, "STATUS=0 connections open") {
            $0.value("STATUS") == "0 connections open"
        }
        XCTAssertFalse(status0.has("READY=1"), "\(status0)")

        // SIGTERM: STOPPING=1 at once (while a connection is still draining), then exit 0.
        let draining = try driver.open("draining", ClientOptions(port: port, tls: false))
        XCTAssertTrue(draining.ok, "\(draining)")
        XCTAssertTrue(try driver.echo("draining", "x").ok)
        let beforeStop = socket.lastIndex
        proxy.send(signal: SIGTERM)
        let stopping = try socket.waitFor(after: beforeStop, timeout: 5, "STOPPING=1", state: { proxy.outputTail() }) {
            $0.has("STOPPING=1")
        }
        XCTAssertEqual(try proxy.waitForExitCode(timeout: 15), 0, proxy.outputTail())
        XCTAssertFalse(
            socket.datagrams.suffix(from: stopping.index + 1).contains { $0.has("READY=1") },
            "no READY=1 after STOPPING=1: \(socket.datagrams)"
        )

        // STATUS-only datagrams come at most once per second.
        let statusOnly = socket.datagrams.filter { $0.value("STATUS") != nil && !$0.has("READY=1") }
        for (earlier, later) in zip(statusOnly, statusOnly.dropFirst()) {
            XCTAssertGreaterThan(
                earlier.received.duration(to: later.received),
                .milliseconds(900),
                "two STATUS datagrams within a second: \(earlier) / \(later)"
            )
        }
    }

    func testAbstractNotifySocket() throws {
        let socket = try abstractSocket()
        XCTAssertTrue(socket.address.hasPrefix("@secproxy-test-"), socket.address)
        let echo = try echoBackend()
        let (proxy, _) = try startNotified(
            ProxyConfig(listeners: [plainListener("web", backends: [echo.address])]),
            socket: socket
        )
        let ready = try waitForStartupReady(socket, proxy)
        try proxy.waitUntilReady()
        try assertEchoes(try proxy.port(of: "web"), "abstract", proxy)
        _ = try socket.waitFor(after: ready.index, timeout: 1, "WATCHDOG=1") { $0.has("WATCHDOG=1") }

        let beforeReload = socket.lastIndex
        proxy.send(signal: SIGHUP)
        let reloading = try socket.waitFor(after: beforeReload, timeout: 10, "RELOADING=1") { $0.has("RELOADING=1") }
        XCTAssertNotNil(reloading.value("MONOTONIC_USEC").flatMap(UInt64.init), "\(reloading)")
        _ = try socket.waitFor(after: reloading.index, timeout: 10, "READY=1") { $0.has("READY=1") }

        let beforeStop = socket.lastIndex
        proxy.send(signal: SIGTERM)
        _ = try socket.waitFor(after: beforeStop, timeout: 5, "STOPPING=1") { $0.has("STOPPING=1") }
        XCTAssertEqual(try proxy.waitForExitCode(timeout: 15), 0, proxy.outputTail())
    }

    func testInvalidConfigOnReloadKeepsTheOldOneAndStillSendsReady() throws {
        let socket = try pathSocket()
        let echo = try echoBackend()
        let config = ProxyConfig(listeners: [plainListener("web", backends: [echo.address])])
        let (proxy, path) = try startNotified(config, socket: socket)
        try waitForStartupReady(socket, proxy)
        try proxy.waitUntilReady()
        let port = try proxy.port(of: "web")
        try assertEchoes(port, "before", proxy)

        // An unknown key (a typo of idle_timeout) makes the file invalid.
        var text = config.rendered
        text = text.replacingOccurrences(of: "mode = \"plain\"\n", with: "mode = \"plain\"\nidle_timeot = \"1s\"\n")
        XCTAssertTrue(text.contains("idle_timeot"), text)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))

        let beforeReload = socket.lastIndex
        let linesBefore = proxy.process.stderrLines.count
        proxy.send(signal: SIGHUP)
        let reloading = try socket.waitFor(
            after: beforeReload, timeout: 10, "RELOADING=1", state: { proxy.outputTail() }
        ) {
            $0.has("RELOADING=1")
        }
        XCTAssertNotNil(reloading.value("MONOTONIC_USEC").flatMap(UInt64.init), "\(reloading)")
        let ready = try socket.waitFor(after: reloading.index, timeout: 10, "READY=1 after a failed reload") {
            $0.has("READY=1")
        }
        XCTAssertEqual(ready.value("STATUS"), "0 connections open", "\(ready)")

        // The diagnostics are logged as errors, naming the offending key.
        let errors = try waitForValue(timeout: 10, "an error line about idle_timeot", state: { proxy.outputTail() }) {
            () -> [String]? in
            let lines = proxy.process.stderrLines.dropFirst(linesBefore).filter {
                ProxyProcess.parseLogLine($0)["level"] == "error"
            }
            return lines.contains { $0.contains("idle_timeot") } ? Array(lines) : nil
        }
        XCTAssertTrue(
            errors.contains { $0.contains("did you mean 'idle_timeout'?") },
            "the diagnostic should carry its hint:\n\(errors.joined(separator: "\n"))"
        )
        XCTAssertFalse(
            proxy.process.stderrLines.dropFirst(linesBefore).contains {
                ProxyProcess.parseLogLine($0)["msg"] == "configuration reloaded"
            },
            "an invalid config must not be reported as reloaded\n\(proxy.outputTail())"
        )

        // The old configuration stays in force: same port, still forwarding, still running.
        XCTAssertTrue(proxy.process.isRunning, proxy.outputTail())
        try assertEchoes(port, "after the failed reload", proxy)

        // Repaired, the next SIGHUP succeeds.
        try config.write(to: temporary)
        let beforeSecond = socket.lastIndex
        proxy.send(signal: SIGHUP)
        let second = try socket.waitFor(after: beforeSecond, timeout: 10, "RELOADING=1 (repaired)") {
            $0.has("RELOADING=1")
        }
        _ = try socket.waitFor(after: second.index, timeout: 10, "READY=1 (repaired)") { $0.has("READY=1") }
        try proxy.waitForMessage("configuration reloaded")
        try assertEchoes(port, "after the good reload", proxy)
    }

    func testReloadAddsAListenerAndKeepsTheOldPort() throws {
        let socket = try pathSocket()
        let echo = try echoBackend()
        let echoNew = try echoBackend()
        let original = ProxyConfig(
            listeners: [plainListener("web", backends: [echo.address], settings: ["idle_timeout": "5m"])]
        )
        let (proxy, _) = try startNotified(original, socket: socket)
        try waitForStartupReady(socket, proxy)
        try proxy.waitUntilReady()
        let web = try proxy.address(of: "web")

        // A connection established before the reload.
        let driver = try driver()
        XCTAssertTrue(try driver.open("before", .plain(web)).ok, proxy.outputTail())
        XCTAssertTrue(try driver.echo("before", "ping").ok)

        // New config: a shorter idle_timeout for web, and a second listener.
        let extraPort = try freePort()
        let changed = ProxyConfig(
            listeners: [
                plainListener("web", backends: [echo.address], settings: ["idle_timeout": "1s"]),
                plainListener("extra", port: extraPort, backends: [echoNew.address]),
            ]
        )
        try changed.write(to: temporary)
        let beforeReload = socket.lastIndex
        let listeningBefore = proxy.events.filter { $0["msg"] == "listening" }.count
        proxy.send(signal: SIGHUP)
        let reloading = try socket.waitFor(
            after: beforeReload, timeout: 10, "RELOADING=1", state: { proxy.outputTail() }
        ) {
            $0.has("RELOADING=1")
        }
        _ = try socket.waitFor(after: reloading.index, timeout: 10, "READY=1 after the reload") { $0.has("READY=1") }
        // READY=1 after a reload comes once the new listener is bound: a connect tried at once succeeds.
        XCTAssertTrue(tcpConnects(port: extraPort), "READY=1 came before 'extra' was bound\n\(proxy.outputTail())")
        try proxy.waitForMessage("configuration reloaded")

        // The new listener is bound and logged; the old one kept its socket (no second listening line for it).
        let listening = try proxy.waitForLogs(count: listeningBefore + 1, "a listening line for 'extra'") {
            $0["msg"] == "listening"
        }
        XCTAssertEqual(listening.filter { $0["listener"] == "extra" }.count, 1, "\(listening)")
        XCTAssertEqual(listening.filter { $0["listener"] == "web" }.count, 1, "web must keep its socket: \(listening)")
        let extra = try proxy.address(of: "extra")
        XCTAssertEqual(extra.port, extraPort)
        let throughExtra = try assertEchoes(extra.port, "through the new listener", proxy)
        let extraLine = Logfmt.parse(
            try connectionLine(of: proxy, clientPort: try XCTUnwrap(throughExtra.localPort))
        )
        XCTAssertEqual(extraLine["listener"], "extra", "\(extraLine)")
        XCTAssertEqual(extraLine["backend"], echoNew.address, "\(extraLine)")

        // The old port keeps accepting, with the new idle_timeout for new connections…
        try assertEchoes(web.port, "old port after reload", proxy)
        XCTAssertTrue(try driver.open("after", .plain(web)).ok, proxy.outputTail())
        XCTAssertTrue(try driver.echo("after", "idle soon").ok)
        let idle = try driver.waitClosed("after", timeout: 6)
        XCTAssertTrue(idle.closed ?? false, "a new connection must get the new 1 s idle_timeout: \(idle)")
        let idleLine = try proxy.waitForLogs(count: 1, "an idle_timeout line") { $0["reason"] == "idle_timeout" }
        XCTAssertEqual(idleLine.count, 1, "\(idleLine)")

        // …while the connection from before the reload keeps the old 5 m one.
        let survivor = try driver.echo("before", "still open")
        XCTAssertTrue(survivor.ok, "the connection from before the reload must keep its settings: \(survivor)")
    }
}

// MARK: - Helpers

/// CLOCK_MONOTONIC in microseconds (what `MONOTONIC_USEC=` carries).
private func monotonicMicroseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
}

/// Whether a TCP connect to 127.0.0.1:`port` succeeds (the socket is closed right after).
private func tcpConnects(port: Int) -> Bool {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { return false }
    defer { _ = close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    return result == 0
}

/// A unix datagram socket bound by the test in place of systemd's notify socket. A background thread receives
/// every datagram (with a 50 ms receive timeout, so that `close()` ends it promptly) and records it with its
/// arrival time.
final class NotifySocket: @unchecked Sendable {
    /// One received datagram.
    struct Datagram: CustomStringConvertible {
        /// Its position among all datagrams received.
        var index: Int
        var text: String
        /// When the receiving thread got it.
        var received: ContinuousClock.Instant

        /// The `KEY=VALUE` assignments, one per line.
        var assignments: [(key: String, value: String)] {
            text.split(separator: "\n", omittingEmptySubsequences: true).map { line in
                guard let equals = line.firstIndex(of: "=") else { return (String(line), "") }
                return (String(line[..<equals]), String(line[line.index(after: equals)...]))
            }
        }

        /// The value of `key`, if assigned.
        func value(_ key: String) -> String? { assignments.first { $0.key == key }?.value }

        /// Whether one line of the datagram is exactly `assignment` (e.g. `READY=1`).
        func has(_ assignment: String) -> Bool {
            text.split(separator: "\n").contains { $0 == assignment }
        }

        var description: String { "#\(index) \(text.debugDescription)" }
    }

    /// The `NOTIFY_SOCKET` value: the path, or `@name` for an abstract socket.
    let address: String
    private let fd: Int32
    private let path: String?
    private let condition = NSCondition()
    private var received: [Datagram] = []
    private var stopRequested = false
    private var readerDone = false
    private var closed = false
    private let start = ContinuousClock.now

    /// Binds a socket at `path` in the file system.
    convenience init(path: String) throws {
        try self.init(address: path, socketPath: Array(path.utf8), filePath: path)
    }

    /// Binds a socket in the abstract namespace; `address` becomes `@name`.
    convenience init(abstractName name: String) throws {
        try self.init(address: "@" + name, socketPath: [0] + Array(name.utf8), filePath: nil)
    }

    private init(address: String, socketPath: [UInt8], filePath: String?) throws {
        self.address = address
        self.path = filePath
        #if canImport(Glibc)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_DGRAM, 0)
        #endif
        guard fd >= 0 else { throw SubprocessError("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        var socketAddress = sockaddr_un()
        socketAddress.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: socketAddress.sun_path)
        guard socketPath.count < capacity else {
            _ = Glibc.close(fd)
            throw SubprocessError("socket path too long: \(address)")
        }
        withUnsafeMutableBytes(of: &socketAddress.sun_path) { $0.copyBytes(from: socketPath) }
        // Abstract addresses count exactly their bytes; paths include the terminating NUL.
        let length = socklen_t(
            MemoryLayout<sa_family_t>.size + socketPath.count + (filePath == nil ? 0 : 1)
        )
        if let filePath { unlink(filePath) }
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            let message = String(cString: strerror(errno))
            _ = Glibc.close(fd)
            throw SubprocessError("bind \(address): \(message)")
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
        let thread = Thread { [self] in self.receiveLoop() }
        thread.name = "notify-socket"
        thread.start()
    }

    deinit { close() }

    private func receiveLoop() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            if condition.withLock({ stopRequested }) { break }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count >= 0 {
                let text = String(decoding: buffer[0..<count], as: UTF8.self)
                let now = ContinuousClock.now
                condition.withLock {
                    received.append(Datagram(index: received.count, text: text, received: now))
                    condition.broadcast()
                }
                continue
            }
            let error = errno
            if error == EAGAIN || error == EWOULDBLOCK || error == EINTR { continue }
            break
        }
        condition.withLock {
            readerDone = true
            condition.broadcast()
        }
    }

    /// Everything received so far, in order.
    var datagrams: [Datagram] { condition.withLock { received } }

    /// The index of the last datagram received (-1 when none): wait `after:` it for what comes next.
    var lastIndex: Int { condition.withLock { received.count - 1 } }

    /// Waits up to `timeout` seconds for the first datagram after index `after` that satisfies `predicate`.
    func waitFor(
        after: Int,
        timeout: TimeInterval,
        _ description: String,
        state: () -> String = { "" },
        where predicate: (Datagram) -> Bool
    ) throws -> Datagram {
        let deadline = Deadline(seconds: timeout)
        var next = after + 1
        condition.lock()
        defer { condition.unlock() }
        while true {
            while next < received.count {
                if predicate(received[next]) { return received[next] }
                next += 1
            }
            if deadline.hasPassed || readerDone { break }
            _ = condition.wait(until: deadline.date)
        }
        let seen = received.map { "\(start.duration(to: $0.received)) \($0)" }.joined(separator: "\n")
        let extra = state()
        throw DeadlineExceeded(
            "timed out after \(timeout)s waiting for a datagram: \(description) (after #\(after))\n"
                + "received:\n\(seen)" + (extra.isEmpty ? "" : "\ndaemon output:\n\(extra)")
        )
    }

    /// Stops the receiving thread, closes the socket and removes its file (idempotent).
    func close() {
        let first = condition.withLock { () -> Bool in
            defer { closed = true }
            stopRequested = true
            return !closed
        }
        guard first else { return }
        condition.withLock {
            let deadline = Deadline(seconds: 2)
            while !readerDone, !deadline.hasPassed { _ = condition.wait(until: deadline.date) }
        }
        _ = Glibc.close(fd)
        if let path { unlink(path) }
    }
}
