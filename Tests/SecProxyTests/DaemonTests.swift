import Foundation
import NIOPosix
import SecProxyTestSupport
import XCTest

@testable import SecProxy

/// The daemon run inside the test process (`Daemon.run()` as the service group): start-up, reload and stop as
/// systemd's notify socket, `/healthz`, `/metrics` and the log see them.
final class DaemonTests: XCTestCase {
    private var temporary: TemporaryDirectory!
    private var echo: EchoServer!
    private var notify: NotifyRecorder!
    private var daemons: [InProcessDaemon] = []

    override func setUp() async throws {
        temporary = try TemporaryDirectory(prefix: "secproxy-daemon")
        echo = try EchoServer()
        notify = try NotifyRecorder(path: temporary.file("notify.sock"))
    }

    override func tearDown() async throws {
        for daemon in daemons where !daemon.hasFinished {
            daemon.daemon.requestStop()
            _ = try? await daemon.exitCode()
        }
        daemons = []
        await notify?.close()
        echo?.stop()
        temporary?.cleanup()
    }

    /// A plain listener `web` to the echo backend, and `[admin]` on `admin` (port 0: any).
    private func config(
        admin: String? = "127.0.0.1:0", listeners: [ProxyConfig.Listener]? = nil, server: [String: TOMLValue] = [:]
    ) -> String {
        let config = ProxyConfig(server: server, listeners: listeners ?? [.plain("web", backends: [echo.address])])
        return config.rendered + (admin.map { "\n[admin]\nlisten = \(tomlQuoted($0))\n" } ?? "")
    }

    private func start(_ text: String, watchdogUsec: Int? = nil, options: Daemon.Options = Daemon.Options()) async throws
        -> InProcessDaemon
    {
        let path = try temporary.write("secproxy.toml", text)
        var environment = ["NOTIFY_SOCKET": notify.path]
        if let watchdogUsec { environment["WATCHDOG_USEC"] = String(watchdogUsec) }
        let daemon = try await InProcessDaemon(path: path, environment: environment, options: options)
        daemons.append(daemon)
        return daemon
    }

    /// Waits for a datagram after the first `after` ones that satisfies `predicate`; returns its index.
    @discardableResult
    private func waitForDatagram(
        after: Int = 0, _ description: String, where predicate: @escaping (String) -> Bool
    ) async throws -> Int {
        var found: Int?
        try await eventually(10, description, state: { "\(self.notify.datagrams)" }) {
            let datagrams = self.notify.datagrams
            found = datagrams.indices.first { $0 >= after && predicate(datagrams[$0]) }
            return found != nil
        }
        return found!
    }

    private func reloads(_ daemon: InProcessDaemon, _ result: String) throws -> Double? {
        try scrapeMetrics(daemon.daemon.metrics).value("secproxy_config_reloads_total", ["result": result])
    }

    // MARK: - Tests

    func testStartReloadAndStopInTheOrderSystemdExpects() async throws {
        let daemon = try await start(config(server: ["drain_timeout": "20s"]), watchdogUsec: 100_000)
        let admin = try await daemon.adminPort()
        let port = try await daemon.port(of: "web")

        // READY=1 (with STATUS) is the first datagram, and by then /healthz says ok.
        let ready = try await waitForDatagram("READY=1") { $0.hasAssignment("READY=1") }
        XCTAssertEqual(ready, 0, "\(notify.datagrams)")
        XCTAssertEqual(notify.datagrams[0], "READY=1\nSTATUS=0 connections open")
        let healthy = try curl(admin, "/healthz")
        XCTAssertEqual(healthy.status, 200, "\(healthy)")
        XCTAssertEqual(healthy.body, "ok\n")
        try await waitForDatagram(after: ready + 1, "WATCHDOG=1") { $0 == "WATCHDOG=1" }

        // A reload: RELOADING=1 with MONOTONIC_USEC, then READY=1; counted as a success.
        let beforeReload = notify.datagrams.count
        daemon.daemon.requestReload()
        let reloading = try await waitForDatagram(after: beforeReload, "RELOADING=1") { $0.hasAssignment("RELOADING=1") }
        XCTAssertNotNil(
            notify.datagrams[reloading].split(separator: "\n").first { $0.hasPrefix("MONOTONIC_USEC=") }.flatMap {
                UInt64($0.dropFirst("MONOTONIC_USEC=".count))
            },
            notify.datagrams[reloading]
        )
        try await waitForDatagram(after: reloading + 1, "READY=1 after RELOADING=1") { $0.hasAssignment("READY=1") }
        try await eventually(5, "a successful reload counted") { try self.reloads(daemon, "success") == 1 }
        XCTAssertEqual(try reloads(daemon, "failure"), 0)
        XCTAssertEqual(daemon.logs.messages("configuration reloaded").count, 1, daemon.logs.tail)

        // A connection held open across the stop: STOPPING=1 at once, /healthz says draining, new connections
        // are refused, and run() returns 0 once the held connection is done.
        let held = try RawClient(port: port)
        try held.send("ping")
        XCTAssertEqual(held.read(count: 4, timeout: 5), "ping")
        let beforeStop = notify.datagrams.count
        daemon.daemon.requestStop()
        let stopping = try await waitForDatagram(after: beforeStop, "STOPPING=1") { $0 == "STOPPING=1" }
        try await eventually(5, "/healthz draining") { (try? curl(admin, "/healthz"))?.body == "draining\n" }
        XCTAssertEqual(try curl(admin, "/healthz").status, 503)
        try await eventually(5, "the listener closed") { (try? RawClient(port: port)) == nil }
        try held.send("pong")
        XCTAssertEqual(held.read(count: 4, timeout: 5), "pong", "the held connection works during the drain")
        XCTAssertFalse(daemon.hasFinished, "the daemon waits for the held connection")
        let watchdogsBefore = notify.datagrams.filter { $0 == "WATCHDOG=1" }.count
        try await waitForDatagram(after: notify.datagrams.count, "WATCHDOG=1 during the drain") { $0 == "WATCHDOG=1" }
        XCTAssertGreaterThan(notify.datagrams.filter { $0 == "WATCHDOG=1" }.count, watchdogsBefore)
        Glibc.shutdown(held.fd, Int32(SHUT_RDWR))
        let code = try await daemon.exitCode()
        XCTAssertEqual(code, 0, daemon.logs.tail)
        XCTAssertFalse(notify.datagrams[(stopping + 1)...].contains { $0.hasAssignment("READY=1") }, "\(notify.datagrams)")
        let messages = daemon.logs.lines.map(\.message)
        XCTAssertEqual(messages.last, "stopped", "\(messages)")
        let order = ["admin listening", "listening", "ready", "reloading configuration", "configuration reloaded", "stopping", "stopped"]
        XCTAssertEqual(messages.filter { order.contains($0) }, order, "\(messages)")
        XCTAssertEqual(daemon.logs.messages("connection closed").count, 1)
    }

    func testAnInvalidReloadKeepsTheRunningConfigurationAndCountsAFailure() async throws {
        let daemon = try await start(config())
        let admin = try await daemon.adminPort()
        let port = try await daemon.port(of: "web")
        try temporary.write("secproxy.toml", config().replacingOccurrences(of: "mode = \"plain\"", with: "mode = \"plane\""))
        daemon.daemon.requestReload()
        let reloading = try await waitForDatagram("RELOADING=1") { $0.hasAssignment("RELOADING=1") }
        try await waitForDatagram(after: reloading + 1, "READY=1 after a failed reload") { $0.hasAssignment("READY=1") }
        try await eventually(5, "the failure counted") { try self.reloads(daemon, "failure") == 1 }
        XCTAssertEqual(try reloads(daemon, "success"), 0)
        XCTAssertTrue(daemon.logs.lines.contains { $0.level == .error && $0.message.contains("plane") }, daemon.logs.tail)
        XCTAssertEqual(daemon.logs.messages("configuration reload failed; keeping the running configuration").count, 1)
        XCTAssertEqual(try curl(admin, "/healthz").status, 200)
        let client = try RawClient(port: port)
        try client.send("still")
        XCTAssertEqual(client.read(count: 5, timeout: 5), "still")
    }

    /// A reload whose new listener cannot bind: the rest of the new configuration is in force, `/healthz` says
    /// which listener is missing and why, the reload counts as a failure; fixed by the next reload.
    func testAListenerThatCannotBindMakesHealthzUnhealthy() async throws {
        let daemon = try await start(config())
        let admin = try await daemon.adminPort()
        let occupied = try OccupiedPort()
        var extra = ProxyConfig.Listener.plain("extra", backends: [echo.address])
        extra.listen = occupied.address
        try temporary.write(
            "secproxy.toml", config(listeners: [.plain("web", backends: [echo.address]), extra])
        )
        daemon.daemon.requestReload()
        try await eventually(10, "the reload done", state: { daemon.logs.tail }) {
            !daemon.logs.messages("configuration reloaded").isEmpty
        }
        let reply = try curl(admin, "/healthz")
        XCTAssertEqual(reply.status, 503, "\(reply)")
        XCTAssertTrue(reply.body.hasPrefix("listener 'extra' is not bound: "), reply.body)
        XCTAssertTrue(reply.body.contains("Address already in use"), reply.body)
        XCTAssertEqual(reply.body.filter { $0 == "\n" }.count, 1, "one line: \(reply.body)")
        XCTAssertEqual(try reloads(daemon, "failure"), 1)
        XCTAssertEqual(daemon.logs.messages("cannot bind listener").first?.level, .error)

        extra.listen = "127.0.0.1:0"
        try temporary.write("secproxy.toml", config(listeners: [.plain("web", backends: [echo.address]), extra]))
        daemon.daemon.requestReload()
        try await eventually(10, "the second reload", state: { daemon.logs.tail }) {
            daemon.logs.messages("configuration reloaded").count == 2
        }
        XCTAssertEqual(try curl(admin, "/healthz").body, "ok\n")
        XCTAssertEqual(try reloads(daemon, "success"), 1)
        _ = try await daemon.port(of: "extra")
    }

    func testTheAdminEndpointMovesOnReload() async throws {
        let daemon = try await start(config())
        let before = try await daemon.adminPort()
        let reserved = try RefusingPort()
        let wanted = reserved.port
        reserved.release()
        try temporary.write("secproxy.toml", config(admin: "127.0.0.1:\(wanted)"))
        daemon.daemon.requestReload()
        try await eventually(10, "the admin endpoint moved", state: { daemon.logs.tail }) {
            await daemon.daemon.adminAddress()?.port == wanted
        }
        XCTAssertEqual(try curl(wanted, "/healthz").body, "ok\n")
        XCTAssertThrowsError(try RawClient(port: before), "the old admin port must be closed")
        try await eventually(5, "the reload counted") { try self.reloads(daemon, "success") == 1 }

        // Without [admin] the endpoint closes.
        try temporary.write("secproxy.toml", config(admin: nil))
        daemon.daemon.requestReload()
        try await eventually(10, "the admin endpoint closed") { await daemon.daemon.adminAddress() == nil }
        XCTAssertThrowsError(try RawClient(port: wanted))
    }

    func testAnAdminAddressThatCannotBeBoundFailsTheStartWithExitCode3() async throws {
        let occupied = try OccupiedPort()
        let daemon = try await start(config(admin: occupied.address))
        let code = try await daemon.exitCode()
        XCTAssertEqual(code, 3)
        XCTAssertEqual(daemon.logs.messages("cannot bind admin endpoint").first?.level, .critical, daemon.logs.tail)
        XCTAssertTrue(daemon.logs.messages("ready").isEmpty)
        XCTAssertFalse(notify.datagrams.contains { $0.hasAssignment("READY=1") }, "\(notify.datagrams)")
    }

    /// Random ticket keys are rotated on the daemon's schedule: a TLS 1.2 ticket resumes until two rotations
    /// have passed, then no more.
    func testTicketKeysRotateOnTheDaemonsSchedule() async throws {
        guard let openssl = Subprocess.which("openssl") else { throw SubprocessError("openssl is not installed") }
        let ca = try TestCA(directory: temporary.file("certs"))
        let cert = try ca.serverCertificate("server")
        let rotations = CallCounter()
        var options = Daemon.Options()
        options.ticketKeyRotationInterval = .milliseconds(700)
        options.onTicketKeyRotation = { contexts in rotations.add(contexts) }
        let daemon = try await start(
            config(listeners: [.tls("web", cert: cert.certPath, key: cert.keyPath, backends: [echo.address])]),
            options: options
        )
        let port = try await daemon.port(of: "web")
        let session = temporary.file("session.pem")
        func connect(_ extra: [String]) throws -> String {
            let run = try Subprocess.run(
                openssl,
                ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost", "-tls1_2"] + extra,
                input: Data(), timeout: 20
            )
            return run.stdout + run.stderr
        }
        // Right after a rotation, so that the next one is most of an interval away.
        try await eventually(5, "a first rotation") { rotations.value >= 1 }
        let seen = rotations.value
        let first = try connect(["-sess_out", session])
        XCTAssertTrue(first.contains("New,"), first)
        let resumed = try connect(["-sess_in", session])
        XCTAssertTrue(resumed.contains("Reused,"), "the ticket resumes while its key is current or previous:\n\(resumed)")
        try await eventually(5, "two more rotations") { rotations.value >= seen + 2 }
        let after = try connect(["-sess_in", session])
        XCTAssertTrue(after.contains("New,"), "two rotations later the ticket's key is gone:\n\(after)")
    }
}

/// A thread-safe counter for callbacks.
final class CallCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0

    var value: Int { lock.withLock { count } }

    func add(_ amount: Int) { lock.withLock { count += amount } }
}
