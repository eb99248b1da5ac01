import Foundation
import SecProxyTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// systemd socket activation and the file-descriptor store (SPEC §3 systemd): a socket passed with
/// `LISTEN_FDS`/`LISTEN_FDNAMES` is used for the listener of the same name, a passed socket no listener
/// wants is closed, with `$FDSTORE` every listening socket is sent with `FDSTORE=1`/`FDNAME=` before
/// `READY=1` (and dropped with `FDSTOREREMOVE=1`), and a restart that gets the stored socket back refuses
/// no connection because listening sockets are closed, never `shutdown()`.
///
/// Foundation's `Process` closes every inherited descriptor above 2 in the child, so a descriptor cannot be
/// handed to `/bin/sh` directly. A small Python launcher stands in for systemd: it receives the descriptors
/// from the test over a unix socket (SCM_RIGHTS), puts them on fds 7…, and execs
/// `/bin/sh -c 'exec 3>&7 …; LISTEN_PID=$$ exec secproxy -c CONFIG'`; the PID stays the same through
/// both execs, so the daemon is stopped by the PID the test started.
final class SocketActivationTests: ProxyTestCase {
    private var daemons: [Subprocess] = []
    private var notifySockets: [SAFDNotifySocket] = []
    private var ownedDescriptors: [Int32] = []

    override func tearDown() {
        for daemon in daemons { daemon.terminate(grace: 3) }
        daemons = []
        for socket in notifySockets { socket.close() }
        notifySockets = []
        for descriptor in ownedDescriptors { _ = Glibc.close(descriptor) }
        ownedDescriptors = []
        super.tearDown()
    }

    // MARK: - World building

    /// A TCP socket of the test, bound to 127.0.0.1:0 and listening (closed in tearDown unless released).
    private func listeningSocket() throws -> (fd: Int32, port: Int) {
        let made = try SASockets.listeningTCP()
        ownedDescriptors.append(made.fd)
        return made
    }

    /// Closes a descriptor the test owns now (and forgets it for tearDown).
    private func closeOwned(_ fd: Int32) {
        if let index = ownedDescriptors.firstIndex(of: fd) { ownedDescriptors.remove(at: index) }
        _ = Glibc.close(fd)
    }

    /// A loopback port that was free a moment ago.
    private func freePort() throws -> Int {
        let reserved = try RefusingPort()
        let port = reserved.port
        reserved.release()
        return port
    }

    /// The test's stand-in for systemd's notify socket, receiving descriptors too.
    private func notifySocket() throws -> SAFDNotifySocket {
        let socket = try SAFDNotifySocket(path: temporary.file("notify-\(notifySockets.count).sock"))
        notifySockets.append(socket)
        return socket
    }

    /// A plain listener named `name` on 127.0.0.1:`port`.
    private func plainListener(_ name: String, port: Int = 0, backends: [String]) -> ProxyConfig.Listener {
        var listener = ProxyConfig.Listener.plain(name, backends: backends)
        listener.listen = "127.0.0.1:\(port)"
        return listener
    }

    /// Starts the daemon through the launcher with `descriptors` passed as `LISTEN_FDS` (fd 3, 4, …) under
    /// `names`; does not wait for anything. The test's own copies of the descriptors stay open.
    private func startActivated(
        configPath: String,
        descriptors: [Int32],
        names: [String],
        environment extra: [String: String?] = [:]
    ) throws -> Subprocess {
        precondition(!descriptors.isEmpty && descriptors.count <= 3 && descriptors.count == names.count)
        let launcher = try temporary.write("launcher/launch.py", Self.launcherScript)
        let handoverPath = temporary.file("handover-\(daemons.count).sock")
        let handover = try SASockets.unixListener(path: handoverPath)
        defer {
            _ = Glibc.close(handover)
            unlink(handoverPath)
        }
        var redirections: [String] = []
        var closings: [String] = []
        for index in descriptors.indices {
            redirections.append("\(3 + index)>&\(7 + index)")
            closings.append("\(7 + index)>&-")
        }
        let binary = try ProxyProcess.binaryPath()
        let command =
            "exec \(redirections.joined(separator: " ")) \(closings.joined(separator: " ")); "
            + "LISTEN_PID=$$ exec \(shellQuoted(binary)) -c \(shellQuoted(configPath))"
        var environment: [String: String?] = [
            "SECPROXY_CONFIG": nil, "NOTIFY_SOCKET": nil, "FDSTORE": nil, "LISTEN_PID": nil,
            "WATCHDOG_USEC": nil, "WATCHDOG_PID": nil,
            "LISTEN_FDS": String(descriptors.count), "LISTEN_FDNAMES": names.joined(separator: ":"),
        ]
        for (key, value) in extra { environment[key] = value }
        let python = try XCTUnwrap(Subprocess.which("python3"), "python3 is needed for the launcher")
        let process = Subprocess(
            executable: python,
            arguments: [launcher, handoverPath, String(descriptors.count), command],
            environment: environment
        )
        daemons.append(process)
        try process.start()
        let connection = try SASockets.accept(handover, timeout: 15) {
            "the launcher did not connect\n\(process.outputTail())"
        }
        defer { _ = Glibc.close(connection) }
        try SASockets.sendDescriptors(descriptors, over: connection)
        return process
    }

    /// Starts the daemon the ordinary way with `NOTIFY_SOCKET` (and `FDSTORE` when given).
    private func startNotified(
        configPath: String,
        socket: SAFDNotifySocket,
        fdStore: String?
    ) throws -> ProxyProcess {
        let proxy = try ProxyProcess(
            configPath: configPath,
            environment: ["NOTIFY_SOCKET": socket.path, "FDSTORE": fdStore]
        )
        daemons.append(proxy.process)
        try proxy.start()
        return proxy
    }

    private func shellQuoted(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Parsed stderr lines of a daemon.
    private func events(_ daemon: Subprocess) -> [[String: String]] {
        daemon.stderrLines.map(ProxyProcess.parseLogLine)
    }

    /// Waits for the first line with `msg=message` and returns its fields.
    @discardableResult
    private func waitForMessage(
        _ daemon: Subprocess,
        _ message: String,
        timeout: TimeInterval = 20
    ) throws -> [String: String] {
        ProxyProcess.parseLogLine(
            try daemon.waitForLine(in: .stderr, timeout: timeout, "msg=\(message)") {
                ProxyProcess.parseLogLine($0)["msg"] == message
            }
        )
    }

    /// One plain echo round trip through 127.0.0.1:`port` with the Python client.
    @discardableResult
    private func assertEchoes(
        _ port: Int,
        _ text: String,
        _ state: @autoclosure () -> String,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws -> TransferResult {
        let result = try python.transfer(ClientOptions(port: port, tls: false), payload: .text(text), timeout: 10)
        XCTAssertTrue(result.ok, "\(result)\n\(state())", file: file, line: line)
        XCTAssertEqual(result.receivedText, text, file: file, line: line)
        return result
    }

    // MARK: - Socket activation

    func testPassedSocketIsUsedForTheListenerOfTheSameName() throws {
        let echo = try echoBackend()
        let passed = try listeningSocket()
        // The config names another address: the passed socket wins, that address is never bound.
        let configured = try freePort()
        let path = try ProxyConfig(listeners: [plainListener("web", port: configured, backends: [echo.address])])
            .write(to: temporary)
        let daemon = try startActivated(configPath: path, descriptors: [passed.fd], names: ["web"])
        // The daemon holds the socket now; the test's copy goes, so only the daemon can serve it.
        closeOwned(passed.fd)
        try waitForMessage(daemon, "ready")

        let listening = events(daemon).filter { $0["msg"] == "listening" }
        XCTAssertEqual(listening.count, 1, "\(listening)\n\(daemon.outputTail())")
        let line = try XCTUnwrap(listening.first)
        XCTAssertEqual(line["listener"], "web", "\(line)")
        XCTAssertEqual(line["socket"], "inherited", "the passed socket must be used: \(line)")
        XCTAssertEqual(line["address"], "127.0.0.1:\(passed.port)", "\(line)")

        let result = try assertEchoes(passed.port, "through the passed socket", daemon.outputTail())
        let clientPort = try XCTUnwrap(result.localPort)
        let closed = try waitForValue(timeout: 10, "the connection line", state: { daemon.outputTail() }) {
            self.events(daemon).first {
                $0["msg"] == "connection closed" && ($0["client"] ?? "").hasSuffix(":\(clientPort)")
            }
        }
        XCTAssertEqual(closed["listener"], "web", "\(closed)")
        XCTAssertEqual(closed["backend"], echo.address, "\(closed)")
        XCTAssertEqual(
            SASockets.connectErrno(port: configured),
            ECONNREFUSED,
            "the configured address must not be bound when a socket was passed\n\(daemon.outputTail())"
        )
        XCTAssertTrue(daemon.isRunning, daemon.outputTail())
    }

    func testPassedSocketWithoutAListenerIsClosed() throws {
        let echo = try echoBackend()
        let web = try listeningSocket()
        let stray = try listeningSocket()
        let path = try ProxyConfig(listeners: [plainListener("web", backends: [echo.address])]).write(to: temporary)
        let daemon = try startActivated(
            configPath: path,
            descriptors: [web.fd, stray.fd],
            names: ["web", "stray"]
        )
        closeOwned(web.fd)
        closeOwned(stray.fd)
        try waitForMessage(daemon, "ready")

        // Only the daemon held the stray socket: once it is closed, a connect is refused.
        let refused = SASockets.connectErrno(port: stray.port)
        XCTAssertEqual(
            refused,
            ECONNREFUSED,
            "a passed socket no listener uses must be closed (connect gave \(String(cString: strerror(refused))))"
                + "\n\(daemon.outputTail())"
        )
        let listening = events(daemon).filter { $0["msg"] == "listening" }
        XCTAssertEqual(listening.map { $0["listener"] ?? "" }, ["web"], "\(listening)")
        XCTAssertEqual(listening.first?["socket"], "inherited", "\(listening)")
        try assertEchoes(web.port, "web still serves", daemon.outputTail())
        XCTAssertTrue(daemon.isRunning, daemon.outputTail())
    }

    // MARK: - File-descriptor store

    func testListeningSocketIsStoredBeforeReady() throws {
        let echo = try echoBackend()
        let notify = try notifySocket()
        let path = try ProxyConfig(listeners: [plainListener("web", backends: [echo.address])]).write(to: temporary)
        let proxy = try startNotified(configPath: path, socket: notify, fdStore: "8")
        let ready = try notify.waitFor(after: -1, timeout: 20, "READY=1", state: { proxy.outputTail() }) {
            $0.has("READY=1")
        }
        try proxy.waitUntilReady()
        let port = try proxy.port(of: "web")

        let stores = notify.datagrams.filter { $0.has("FDSTORE=1") }
        XCTAssertEqual(stores.count, 1, "one FDSTORE=1 per listener: \(notify.datagrams)")
        let store = try XCTUnwrap(stores.first, "no FDSTORE=1 datagram: \(notify.datagrams)")
        XCTAssertLessThan(store.index, ready.index, "the socket must be stored before READY=1: \(notify.datagrams)")
        XCTAssertEqual(store.value("FDNAME"), "web", "\(store)")
        XCTAssertFalse(store.truncated, "control data truncated: \(store)")
        XCTAssertEqual(store.descriptors.count, 1, "FDSTORE=1 must carry exactly one descriptor: \(store)")
        let stored = try XCTUnwrap(store.descriptors.first)
        XCTAssertEqual(SASockets.socketType(stored), Int32(SOCK_STREAM.rawValue), "not a stream socket")
        XCTAssertTrue(SASockets.isListening(stored), "the stored descriptor is not a listening socket")
        XCTAssertEqual(SASockets.localPort(stored), port, "the stored socket is not bound to the listener's port")
        XCTAssertFalse(
            notify.datagrams.contains { !$0.descriptors.isEmpty && !$0.has("FDSTORE=1") },
            "descriptors only travel with FDSTORE=1: \(notify.datagrams)"
        )
        try assertEchoes(port, "still serving", proxy.outputTail())
    }

    func testReloadRemovesTheDroppedListenerAndStoresTheNewOne() throws {
        let echo = try echoBackend()
        let notify = try notifySocket()
        let config = ProxyConfig(listeners: [plainListener("web", backends: [echo.address])])
        let path = try config.write(to: temporary)
        let proxy = try startNotified(configPath: path, socket: notify, fdStore: "8")
        _ = try notify.waitFor(after: -1, timeout: 20, "READY=1", state: { proxy.outputTail() }) {
            $0.has("READY=1")
        }
        try proxy.waitUntilReady()

        // web is dropped, api is added.
        let apiPort = try freePort()
        try ProxyConfig(listeners: [plainListener("api", port: apiPort, backends: [echo.address])])
            .write(to: temporary)
        let before = notify.lastIndex
        proxy.send(signal: SIGHUP)
        let reloading = try notify.waitFor(after: before, timeout: 10, "RELOADING=1", state: { proxy.outputTail() }) {
            $0.has("RELOADING=1")
        }
        let ready = try notify.waitFor(
            after: reloading.index, timeout: 10, "READY=1 after the reload", state: { proxy.outputTail() }
        ) {
            $0.has("READY=1")
        }
        let during = notify.datagrams.filter { $0.index > reloading.index && $0.index < ready.index }
        let removals = during.filter { $0.has("FDSTOREREMOVE=1") }
        XCTAssertEqual(removals.count, 1, "one FDSTOREREMOVE=1 for the dropped listener: \(notify.datagrams)")
        if let removal = removals.first {
            XCTAssertEqual(removal.value("FDNAME"), "web", "\(removal)")
            XCTAssertTrue(removal.descriptors.isEmpty, "FDSTOREREMOVE=1 carries no descriptor: \(removal)")
        }
        let stores = during.filter { $0.has("FDSTORE=1") }
        XCTAssertEqual(stores.count, 1, "the new listener (only) is stored: \(notify.datagrams)")
        let store = try XCTUnwrap(stores.first)
        XCTAssertEqual(store.value("FDNAME"), "api", "\(store)")
        XCTAssertEqual(store.descriptors.count, 1, "\(store)")
        let stored = try XCTUnwrap(store.descriptors.first)
        XCTAssertTrue(SASockets.isListening(stored), "the stored descriptor is not a listening socket")
        XCTAssertEqual(SASockets.localPort(stored), apiPort, "the stored socket is not bound to api's port")
        try proxy.waitForMessage("configuration reloaded")
        try assertEchoes(apiPort, "through the new listener", proxy.outputTail())
    }

    func testNothingIsStoredWithoutFDSTORE() throws {
        let echo = try echoBackend()
        let notify = try notifySocket()
        let path = try ProxyConfig(listeners: [plainListener("web", backends: [echo.address])]).write(to: temporary)
        let proxy = try startNotified(configPath: path, socket: notify, fdStore: nil)
        _ = try notify.waitFor(after: -1, timeout: 20, "READY=1", state: { proxy.outputTail() }) {
            $0.has("READY=1")
        }
        try proxy.waitUntilReady()
        // A reload with a new listener would store it too; then stop: nothing is ever stored or removed.
        try ProxyConfig(
            listeners: [
                plainListener("web", backends: [echo.address]), plainListener("api", backends: [echo.address]),
            ]
        ).write(to: temporary)
        let before = notify.lastIndex
        proxy.send(signal: SIGHUP)
        let reloading = try notify.waitFor(after: before, timeout: 10, "RELOADING=1") { $0.has("RELOADING=1") }
        _ = try notify.waitFor(after: reloading.index, timeout: 10, "READY=1 after the reload") { $0.has("READY=1") }
        XCTAssertEqual(try proxy.stop(), .exited(0), proxy.outputTail())
        _ = try notify.waitFor(after: reloading.index, timeout: 5, "STOPPING=1") { $0.has("STOPPING=1") }
        let stored = notify.datagrams.filter {
            $0.has("FDSTORE=1") || $0.has("FDSTOREREMOVE=1") || $0.value("FDNAME") != nil || !$0.descriptors.isEmpty
        }
        XCTAssertEqual(stored.count, 0, "without $FDSTORE nothing is stored: \(stored)")
    }

    // MARK: - Restart through the store

    func testRestartWithTheStoredSocketRefusesNoConnection() throws {
        let echo = try echoBackend()
        let notify = try notifySocket()
        // Daemon A binds its own socket and stores it.
        let configA = ProxyConfig(listeners: [plainListener("web", backends: [echo.address])])
        let pathA = try configA.write(to: temporary, name: "a.toml")
        let proxyA = try startNotified(configPath: pathA, socket: notify, fdStore: "8")
        let readyA = try notify.waitFor(after: -1, timeout: 20, "READY=1 of A", state: { proxyA.outputTail() }) {
            $0.has("READY=1")
        }
        try proxyA.waitUntilReady()
        let port = try proxyA.port(of: "web")
        let store = try XCTUnwrap(
            notify.datagrams.first { $0.has("FDSTORE=1") && $0.index < readyA.index },
            "A stored nothing before READY=1: \(notify.datagrams)"
        )
        XCTAssertEqual(store.value("FDNAME"), "web")
        let stored = try XCTUnwrap(store.descriptors.first, "FDSTORE=1 without a descriptor: \(store)")
        XCTAssertEqual(SASockets.localPort(stored), port)

        // Client loops connect continuously across the hand-over.
        let loop = SAClientLoop(port: port, clients: 8, maxAttempts: 2000, deadline: 20)
        loop.start()
        defer { loop.stop() }
        try waitUntil(
            timeout: 10, "the client loops are served by A", state: { "\(loop.summary)\n\(proxyA.outputTail())" }
        ) {
            loop.summary.ok >= 40
        }

        // SIGTERM A: exit 0, and its close did not shut the shared socket down.
        XCTAssertEqual(try proxyA.stop(timeout: 15), .exited(0), proxyA.outputTail())
        XCTAssertTrue(
            SASockets.isListening(stored),
            "after A stopped the stored socket no longer listens: A must close(), never shutdown()"
        )
        // Connections made while no daemon runs wait in the listen backlog.
        var held: [(fd: Int32, text: String)] = []
        defer { for connection in held { _ = Glibc.close(connection.fd) } }
        for index in 0..<20 {
            let text = "queued during the hand-over #\(index)\n"
            switch SASockets.connectAndSend(port: port, text: text) {
            case .success(let fd): held.append((fd, text))
            case .failure(let error): XCTFail("connect \(index) while no daemon runs: \(error)")
            }
        }

        // Daemon B gets the stored socket back as LISTEN_FDS (as systemd does on restart), same config file.
        let listenerB = plainListener("web", port: port, backends: [echo.address])
        let pathB = try ProxyConfig(listeners: [listenerB]).write(to: temporary, name: "b.toml")
        let beforeB = notify.lastIndex
        let daemonB = try startActivated(
            configPath: pathB,
            descriptors: [stored],
            names: ["web"],
            environment: ["NOTIFY_SOCKET": notify.path, "FDSTORE": "8"]
        )
        try waitForMessage(daemonB, "ready")
        let listeningB = try XCTUnwrap(events(daemonB).first { $0["msg"] == "listening" }, daemonB.outputTail())
        XCTAssertEqual(listeningB["socket"], "inherited", "B must take the stored socket: \(listeningB)")
        XCTAssertEqual(listeningB["address"], "127.0.0.1:\(port)", "\(listeningB)")
        _ = try notify.waitFor(after: beforeB, timeout: 10, "READY=1 of B") { $0.has("READY=1") }

        // Every connection queued during the hand-over is served by B.
        for (index, connection) in held.enumerated() {
            let reply = SASockets.receive(connection.fd, count: connection.text.utf8.count, timeout: 10)
            XCTAssertEqual(
                reply, connection.text, "queued connection #\(index) was not served\n\(daemonB.outputTail())"
            )
        }
        let queuedPorts = held.compactMap { SASockets.localPort($0.fd) }
        for connection in held { _ = Glibc.close(connection.fd) }
        held = []
        // B logs each of them (by client port) once they are closed.
        try waitUntil(timeout: 10, "B's connection lines for the queued connections", state: { daemonB.outputTail() }) {
            let clients = Set(
                self.events(daemonB).filter { $0["msg"] == "connection closed" }.compactMap { $0["client"] }
            )
            return queuedPorts.allSatisfy { clients.contains("127.0.0.1:\($0)") }
        }
        XCTAssertEqual(queuedPorts.count, 20)
        let okAtReady = loop.summary.ok
        try waitUntil(
            timeout: 10, "the client loops are served by B", state: { "\(loop.summary)\n\(daemonB.outputTail())" }
        ) {
            loop.summary.ok >= okAtReady + 40
        }
        loop.stop()
        let summary = loop.summary
        XCTAssertEqual(summary.refused, 0, "connections refused across the restart: \(summary)")
        XCTAssertEqual(
            summary.failed,
            [],
            "connections accepted but dropped (reset without the echo) across the restart: \(summary)\n"
                + "A's lines of dropped connections:\n"
                + proxyA.connectionLogLines.filter { ($0.contains("backend= ")) }.joined(separator: "\n")
        )
        XCTAssertGreaterThan(summary.ok, 10, "\(summary)")

        // Both daemons served some of the loop's connections.
        let servedByB = events(daemonB).filter { $0["msg"] == "connection closed" }.count
        let servedByA = proxyA.connectionLogs.count
        XCTAssertGreaterThan(servedByA, 0, "A served nothing")
        XCTAssertGreaterThan(servedByB, queuedPorts.count, "B served only the queued connections: \(summary)")
        XCTAssertTrue(daemonB.isRunning, daemonB.outputTail())
    }

    // MARK: - Launcher

    /// Receives the descriptors over the unix socket argv[1], moves them to fds 7…, execs /bin/sh -c argv[3].
    static let launcherScript = #"""
        import fcntl, os, socket, sys

        path, count, command = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        msg, fds, flags, addr = socket.recv_fds(s, 64, count)
        s.close()
        if len(fds) != count:
            sys.exit("launcher: expected %d descriptors, got %d" % (count, len(fds)))
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
        for fd in fds:
            os.close(fd)
        for index, fd in enumerate(high):
            os.dup2(fd, 7 + index, inheritable=True)
            os.close(fd)
        sys.stdout.flush()
        os.execv("/bin/sh", ["sh", "-c", command])
        """#
}

// MARK: - POSIX helpers

/// Descriptor-level socket helpers for these tests.
private enum SASockets {
    static func error(_ what: String) -> SubprocessError {
        SubprocessError("\(what): \(String(cString: strerror(errno)))")
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    /// A TCP socket bound to 127.0.0.1:0 and listening.
    static func listeningTCP() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw error("socket") }
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 128) == 0, let port = localPort(fd) else {
            let failure = error("bind/listen 127.0.0.1:0")
            _ = Glibc.close(fd)
            throw failure
        }
        return (fd, port)
    }

    /// The local port of an AF_INET socket.
    static func localPort(_ fd: Int32) -> Int? {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let result = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard result == 0, address.sin_family == sa_family_t(AF_INET) else { return nil }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func intOption(_ fd: Int32, _ option: Int32) -> Int32? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, option, &value, &length) == 0 else { return nil }
        return value
    }

    /// SO_ACCEPTCONN: the socket is in the listening state.
    static func isListening(_ fd: Int32) -> Bool { intOption(fd, SO_ACCEPTCONN) == 1 }

    /// SO_TYPE.
    static func socketType(_ fd: Int32) -> Int32? { intOption(fd, SO_TYPE) }

    static func setTimeouts(_ fd: Int32, seconds: Double) {
        var timeout = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// A blocking connect to 127.0.0.1:`port`; returns the connected socket or the errno.
    static func connect(port: Int) -> Result<Int32, SAConnectError> {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(SAConnectError(code: errno, step: "socket")) }
        setTimeouts(fd, seconds: 5)
        var address = loopback(port: port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            _ = Glibc.close(fd)
            return .failure(SAConnectError(code: code, step: "connect"))
        }
        return .success(fd)
    }

    /// 0 when a connect to 127.0.0.1:`port` succeeds (closed at once), else its errno.
    static func connectErrno(port: Int) -> Int32 {
        switch connect(port: port) {
        case .success(let fd):
            _ = Glibc.close(fd)
            return 0
        case .failure(let error):
            return error.code
        }
    }

    /// Connects and writes `text`; returns the open socket.
    static func connectAndSend(port: Int, text: String) -> Result<Int32, SAConnectError> {
        switch connect(port: port) {
        case .failure(let error):
            return .failure(error)
        case .success(let fd):
            let bytes = Array(text.utf8)
            var sent = 0
            while sent < bytes.count {
                let count = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else {
                    let code = errno
                    _ = Glibc.close(fd)
                    return .failure(SAConnectError(code: code, step: "send"))
                }
                sent += count
            }
            return .success(fd)
        }
    }

    /// Reads `count` bytes (or until EOF, error or `timeout`) and returns them as text; nil when nothing came.
    static func receive(_ fd: Int32, count: Int, timeout: Double) -> String? {
        setTimeouts(fd, seconds: timeout)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = Deadline(seconds: timeout)
        while received.count < count, !deadline.hasPassed {
            let wanted = min(buffer.count, count - received.count)
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, wanted, 0) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { break }
            received += buffer[0..<got]
        }
        return received.isEmpty ? nil : String(decoding: received, as: UTF8.self)
    }

    /// A unix stream socket listening at `path`.
    static func unixListener(path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw error("socket(AF_UNIX)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            _ = Glibc.close(fd)
            throw SubprocessError("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        unlink(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(fd, 4) == 0 else {
            let failure = error("bind/listen \(path)")
            _ = Glibc.close(fd)
            throw failure
        }
        return fd
    }

    /// Accepts one connection on `fd`, waiting at most `timeout` seconds.
    static func accept(_ fd: Int32, timeout: Double, _ message: () -> String) throws -> Int32 {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = Deadline(seconds: timeout)
        while true {
            let ready = poll(&entry, 1, Int32(max(1, deadline.remaining * 1000)))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { throw DeadlineExceeded(message()) }
            let connection = Glibc.accept(fd, nil, nil)
            if connection < 0 && errno == EINTR { continue }
            guard connection >= 0 else { throw error("accept") }
            return connection
        }
    }

    /// The size of `struct cmsghdr` (16 on 64-bit Linux: a size_t length, then level and type as ints), aligned
    /// as CMSG_ALIGN does; its data follows. The CMSG_* macros do not import into Swift.
    static let controlHeaderSize = align(MemoryLayout<cmsghdr>.size)

    /// CMSG_ALIGN: up to a multiple of size_t.
    static func align(_ length: Int) -> Int {
        let unit = MemoryLayout<Int>.size
        return (length + unit - 1) & ~(unit - 1)
    }

    /// Sends one byte with `descriptors` attached (SCM_RIGHTS).
    static func sendDescriptors(_ descriptors: [Int32], over fd: Int32) throws {
        let dataLength = descriptors.count * MemoryLayout<Int32>.size
        var control = [UInt8](repeating: 0, count: controlHeaderSize + align(dataLength))
        control.withUnsafeMutableBytes { raw in
            var header = cmsghdr()
            header.cmsg_len = controlHeaderSize + dataLength
            header.cmsg_level = SOL_SOCKET
            header.cmsg_type = Int32(SCM_RIGHTS)
            raw.storeBytes(of: header, as: cmsghdr.self)
            for (index, descriptor) in descriptors.enumerated() {
                raw.storeBytes(
                    of: descriptor,
                    toByteOffset: controlHeaderSize + index * MemoryLayout<Int32>.size,
                    as: Int32.self
                )
            }
        }
        var payload: [UInt8] = [0x21]
        let sent = payload.withUnsafeMutableBytes { bytes in
            control.withUnsafeMutableBytes { controlBytes in
                var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var header = msghdr()
                    header.msg_iov = vectorPointer
                    header.msg_iovlen = 1
                    header.msg_control = controlBytes.baseAddress
                    header.msg_controllen = controlBytes.count
                    return sendmsg(fd, &header, Int32(MSG_NOSIGNAL))
                }
            }
        }
        guard sent == 1 else { throw error("sendmsg SCM_RIGHTS") }
    }
}

/// Why a client connect failed.
private struct SAConnectError: Error, CustomStringConvertible {
    var code: Int32
    var step: String
    var description: String { "\(step): \(String(cString: strerror(code)))" }
}

/// A unix datagram socket in place of systemd's notify socket that also takes the descriptors sent with
/// SCM_RIGHTS (received with `recvmsg`, close-on-exec); every received descriptor is closed by `close()`.
private final class SAFDNotifySocket: @unchecked Sendable {
    struct Datagram: CustomStringConvertible {
        var index: Int
        var text: String
        var descriptors: [Int32]
        /// MSG_CTRUNC: the control data did not fit.
        var truncated: Bool

        func has(_ assignment: String) -> Bool { text.split(separator: "\n").contains { $0 == assignment } }

        func value(_ key: String) -> String? {
            for line in text.split(separator: "\n") where line.hasPrefix(key + "=") {
                return String(line.dropFirst(key.count + 1))
            }
            return nil
        }

        var description: String {
            "#\(index) \(text.debugDescription)" + (descriptors.isEmpty ? "" : " fds \(descriptors)")
                + (truncated ? " (MSG_CTRUNC)" : "")
        }
    }

    let path: String
    private let fd: Int32
    private let condition = NSCondition()
    private var received: [Datagram] = []
    private var stopRequested = false
    private var readerDone = false
    private var closed = false

    init(path: String) throws {
        self.path = path
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SASockets.error("socket(AF_UNIX, SOCK_DGRAM)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            _ = Glibc.close(fd)
            throw SubprocessError("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        unlink(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else {
            let failure = SASockets.error("bind \(path)")
            _ = Glibc.close(fd)
            throw failure
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
        let thread = Thread { [self] in self.receiveLoop() }
        thread.name = "fdstore-notify-socket"
        thread.start()
    }

    deinit { close() }

    private func receiveLoop() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var control = [UInt8](repeating: 0, count: 1024)
        while !condition.withLock({ stopRequested }) {
            var flags: Int32 = 0
            var controlLength = 0
            let count = buffer.withUnsafeMutableBytes { bytes in
                control.withUnsafeMutableBytes { controlBytes in
                    var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
                    return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                        var header = msghdr()
                        header.msg_iov = vectorPointer
                        header.msg_iovlen = 1
                        header.msg_control = controlBytes.baseAddress
                        header.msg_controllen = controlBytes.count
                        let result = recvmsg(fd, &header, Int32(MSG_CMSG_CLOEXEC))
                        flags = header.msg_flags
                        if result >= 0 { controlLength = header.msg_controllen }
                        return result
                    }
                }
            }
            if count < 0 {
                let error = errno
                if error == EAGAIN || error == EWOULDBLOCK || error == EINTR { continue }
                break
            }
            let descriptors = Self.descriptors(in: control, length: controlLength)
            let text = String(decoding: buffer[0..<count], as: UTF8.self)
            condition.withLock {
                received.append(
                    Datagram(
                        index: received.count,
                        text: text,
                        descriptors: descriptors,
                        truncated: flags & Int32(MSG_CTRUNC) != 0
                    )
                )
                condition.broadcast()
            }
        }
        condition.withLock {
            readerDone = true
            condition.broadcast()
        }
    }

    /// Walks the control messages (as CMSG_FIRSTHDR/CMSG_NXTHDR do) and collects the SCM_RIGHTS descriptors.
    static func descriptors(in control: [UInt8], length: Int) -> [Int32] {
        var result: [Int32] = []
        let headerSize = SASockets.controlHeaderSize
        control.withUnsafeBytes { raw in
            var offset = 0
            while offset + headerSize <= min(length, raw.count) {
                let header = raw.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
                let messageLength = Int(header.cmsg_len)
                guard messageLength >= headerSize, offset + messageLength <= raw.count else { break }
                if header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS) {
                    let count = (messageLength - headerSize) / MemoryLayout<Int32>.size
                    for index in 0..<count {
                        result.append(
                            raw.loadUnaligned(
                                fromByteOffset: offset + headerSize + index * MemoryLayout<Int32>.size,
                                as: Int32.self
                            )
                        )
                    }
                }
                offset += SASockets.align(messageLength)
            }
        }
        return result
    }

    var datagrams: [Datagram] { condition.withLock { received } }

    var lastIndex: Int { condition.withLock { received.count - 1 } }

    /// Waits for the first datagram after index `after` that satisfies `predicate`.
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
        let extra = state()
        throw DeadlineExceeded(
            "timed out after \(timeout)s waiting for a datagram: \(description) (after #\(after))\nreceived:\n"
                + received.map(\.description).joined(separator: "\n")
                + (extra.isEmpty ? "" : "\ndaemon output:\n\(extra)")
        )
    }

    /// Stops the receiver, closes the socket and every received descriptor, removes the file (idempotent).
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
        for datagram in datagrams {
            for descriptor in datagram.descriptors { _ = Glibc.close(descriptor) }
        }
        unlink(path)
    }
}

/// `clients` clients that each connect to 127.0.0.1:`port` again and again (one echo round trip per connection,
/// ~10 ms apart), each on its own thread, counting how the attempts ended. Bounded by `maxAttempts` in all and
/// `deadline` seconds.
private final class SAClientLoop: @unchecked Sendable {
    struct Summary: CustomStringConvertible {
        var attempts = 0
        var ok = 0
        /// Connects refused (ECONNREFUSED).
        var refused = 0
        /// Connected, but closed or reset without the echo (or another error).
        var failed: [String] = []
        var description: String {
            "\(attempts) attempts: \(ok) ok, \(refused) refused, \(failed.count) dropped or failed \(failed.prefix(5))"
        }
    }

    private let port: Int
    private let clients: Int
    private let maxAttempts: Int
    private let deadline: Deadline
    private let condition = NSCondition()
    private var state = Summary()
    private var started = 0
    private var stopRequested = false
    private var finished = 0

    init(port: Int, clients: Int, maxAttempts: Int, deadline: TimeInterval) {
        self.port = port
        self.clients = clients
        self.maxAttempts = maxAttempts
        self.deadline = Deadline(seconds: deadline)
    }

    var summary: Summary { condition.withLock { state } }

    func start() {
        for client in 0..<clients {
            condition.withLock { started += 1 }
            let thread = Thread { [self] in self.run(client) }
            thread.name = "client-loop-\(client)"
            thread.start()
        }
    }

    /// Takes the next attempt number, or nil when the loop is over.
    private func nextAttempt() -> Int? {
        condition.withLock {
            guard !stopRequested, !deadline.hasPassed, state.attempts < maxAttempts else { return nil }
            state.attempts += 1
            return state.attempts
        }
    }

    private func run(_ client: Int) {
        while let attempt = nextAttempt() {
            let text = "client \(client) attempt \(attempt)\n"
            var failure: String?
            var refused = false
            switch SASockets.connectAndSend(port: port, text: text) {
            case .failure(let error):
                refused = error.code == ECONNREFUSED
                failure = "attempt \(attempt): \(error)"
            case .success(let fd):
                let localPort = SASockets.localPort(fd) ?? 0
                let started = ContinuousClock.now
                let reply = SASockets.receive(fd, count: text.utf8.count, timeout: 10)
                let code = errno
                _ = Glibc.close(fd)
                if reply != text {
                    failure = "attempt \(attempt) from port \(localPort): echo \(reply.debugDescription) after "
                        + "\(started.duration(to: .now)) (\(String(cString: strerror(code))))"
                }
            }
            condition.withLock {
                if let failure {
                    if refused { state.refused += 1 } else { state.failed.append(failure) }
                } else {
                    state.ok += 1
                }
            }
            // Pace the clients so that they span the hand-over instead of spending the attempts at once.
            let pause = Deadline(seconds: 0.01)
            condition.withLock {
                while !stopRequested, !pause.hasPassed { _ = condition.wait(until: pause.date) }
            }
        }
        condition.withLock {
            finished += 1
            condition.broadcast()
        }
    }

    /// Stops the clients and waits for their last attempts (idempotent).
    func stop() {
        condition.withLock {
            stopRequested = true
            condition.broadcast()
            let deadline = Deadline(seconds: 15)
            while finished < started, !deadline.hasPassed { _ = condition.wait(until: deadline.date) }
        }
    }
}
