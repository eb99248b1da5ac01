import Foundation
import SecProxyTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

extension ProxyTestCase {
    /// `config` as TOML with `[admin] listen = admin`.
    func withAdmin(_ config: ProxyConfig, _ admin: String) -> String {
        config.rendered + "\n[admin]\nlisten = \(tomlQuoted(admin))\n"
    }

    /// Writes `config` with `[admin]` on `admin`, starts the daemon (ended in tearDown) and, unless
    /// `waitForReady` is false, waits for `msg=ready`.
    func startProxyWithAdmin(
        _ config: ProxyConfig, admin: String = "127.0.0.1:0", environment: [String: String?] = [:],
        waitForReady: Bool = true
    ) throws -> ProxyProcess {
        let path = try temporary.write("secproxy.toml", withAdmin(config, admin))
        let proxy = try ProxyProcess(configPath: path, environment: environment)
        try proxy.start()
        addTeardownBlock { proxy.terminate() }
        if waitForReady {
            try proxy.waitUntilReady(timeout: 20)
        }
        return proxy
    }

    /// The admin endpoint's port, from its `msg="admin listening"` line.
    func adminPort(of proxy: ProxyProcess) throws -> Int {
        let line = try proxy.waitForMessage("admin listening")
        guard let address = line["address"], let (_, port) = ListenerAddress.split(address) else {
            throw SubprocessError("no address in \(line)")
        }
        return port
    }

    /// A loopback port that was free a moment ago.
    func reservedFreePort() throws -> Int {
        let reserved = try RefusingPort()
        defer { reserved.release() }
        return reserved.port
    }

    /// `/metrics` of `proxy`'s admin endpoint, parsed.
    func scrape(_ port: Int) throws -> PrometheusScrape {
        let reply = try curl(port, "/metrics")
        XCTAssertEqual(reply.status, 200, "\(reply)")
        return try PrometheusScrape(reply.body)
    }
}

/// The admin endpoint of the real binary: `/healthz` through start, drain and a listener that cannot bind,
/// its routes and bounds, and `--check-config` on its address.
final class AdminEndToEndTests: ProxyTestCase {
    private var notifySockets: [NotifySocket] = []

    override func tearDown() {
        for socket in notifySockets { socket.close() }
        notifySockets = []
        super.tearDown()
    }

    func testHealthzIsOkWhenReadyArrivesAndSaysDrainingDuringTheStop() throws {
        let echo = try echoBackend()
        let notify = try NotifySocket(path: temporary.file("notify.sock"))
        notifySockets.append(notify)
        let admin = try reservedFreePort()
        let proxy = try startProxyWithAdmin(
            ProxyConfig(server: ["drain_timeout": "20s"], listeners: [.plain("web", backends: [echo.address])]),
            admin: "127.0.0.1:\(admin)", environment: ["NOTIFY_SOCKET": notify.address], waitForReady: false
        )
        // The moment READY=1 arrives, /healthz is ok (nothing is read from the log first).
        _ = try notify.waitFor(after: -1, timeout: 20, "READY=1", state: { proxy.outputTail() }) { $0.has("READY=1") }
        let ready = try curl(admin, "/healthz")
        XCTAssertEqual(ready.status, 200, "\(ready)")
        XCTAssertEqual(ready.body, "ok\n")

        try proxy.waitUntilReady()
        let port = try proxy.port(of: "web")
        let client = try driver()
        XCTAssertTrue(try client.open("held", ClientOptions(port: port, tls: false)).ok)
        XCTAssertTrue(try client.echo("held", "before").ok)
        let beforeStop = notify.lastIndex
        proxy.send(signal: SIGTERM)
        _ = try notify.waitFor(after: beforeStop, timeout: 5, "STOPPING=1") { $0.has("STOPPING=1") }
        // Draining: 503 `draining` while the held connection finishes, so that a balancer stops sending.
        let draining = try curl(admin, "/healthz")
        XCTAssertEqual(draining.status, 503, "\(draining)\n\(proxy.outputTail())")
        XCTAssertEqual(draining.body, "draining\n")
        XCTAssertTrue(try client.echo("held", "during the drain").ok)
        XCTAssertEqual(try curl(admin, "/healthz").body, "draining\n")
        try client.close("held")
        XCTAssertEqual(try proxy.waitForExitCode(timeout: 15), 0, proxy.outputTail())
        XCTAssertThrowsError(try RawClient(port: admin), "the admin endpoint closes with the daemon")
    }

    func testHealthzNamesTheListenerThatCouldNotBindOnReload() throws {
        let echo = try echoBackend()
        var config = ProxyConfig(listeners: [.plain("web", backends: [echo.address])])
        let proxy = try startProxyWithAdmin(config)
        let admin = try adminPort(of: proxy)
        XCTAssertEqual(try curl(admin, "/healthz").status, 200)

        let occupied = try OccupiedPort()
        var extra = ProxyConfig.Listener.plain("extra", backends: [echo.address])
        extra.listen = occupied.address
        config.listeners.append(extra)
        try temporary.write("secproxy.toml", withAdmin(config, "127.0.0.1:\(admin)"))
        proxy.send(signal: SIGHUP)
        try proxy.waitForMessage("configuration reloaded")
        let unhealthy = try curl(admin, "/healthz")
        XCTAssertEqual(unhealthy.status, 503, "\(unhealthy)")
        XCTAssertTrue(unhealthy.body.hasPrefix("listener 'extra' is not bound: "), unhealthy.body)
        XCTAssertTrue(unhealthy.body.contains("127.0.0.1:\(occupied.port)"), unhealthy.body)
        XCTAssertTrue(unhealthy.body.hasSuffix("Address already in use\n"), unhealthy.body)
        let scrape = try scrape(admin)
        XCTAssertEqual(scrape.value("secproxy_config_reloads_total", ["result": "failure"]), 1)
        XCTAssertEqual(scrape.value("secproxy_config_reloads_total", ["result": "success"]), 0)
        // The rest of the new configuration is in force: web still forwards.
        XCTAssertTrue(try python.transfer(.plain(try proxy.address(of: "web")), payload: .text("x")).ok)
    }

    func testRoutesMethodsAndBounds() throws {
        let echo = try echoBackend()
        let proxy = try startProxyWithAdmin(ProxyConfig(listeners: [.plain("web", backends: [echo.address])]))
        let admin = try adminPort(of: proxy)
        XCTAssertEqual(try curl(admin, "/").status, 404)
        XCTAssertEqual(try curl(admin, "/favicon.ico").status, 404)
        let post = try curl(admin, "/metrics", method: "POST")
        XCTAssertEqual(post.status, 405)
        XCTAssertEqual(post.headers["allow"], "GET, HEAD")
        XCTAssertEqual(try curl(admin, "/healthz", method: "PUT").status, 405)
        XCTAssertEqual(try curl(admin, "/healthz", method: "HEAD").status, 200)

        // A head over 8 KiB: 431, closed.
        let big = try RawClient(port: admin)
        try big.send("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: \(String(repeating: "p", count: 9000))\r\n\r\n")
        let (bigText, bigClosed) = big.readUntilClosed(timeout: 10)
        XCTAssertTrue(bigClosed)
        XCTAssertTrue(bigText.hasPrefix("HTTP/1.1 431 "), bigText)
        // A body: 413, closed.
        let body = try RawClient(port: admin)
        try body.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        XCTAssertTrue(body.readUntilClosed(timeout: 10).text.hasPrefix("HTTP/1.1 413 "))
        // Slowloris: a client that sends nothing is answered 408 and closed after the 5 s read timeout.
        let silent = try RawClient(port: admin)
        let started = Date()
        let (silentText, silentClosed) = silent.readUntilClosed(timeout: 15)
        let after = Date().timeIntervalSince(started)
        XCTAssertTrue(silentClosed, silentText)
        XCTAssertTrue(silentText.hasPrefix("HTTP/1.1 408 "), silentText)
        XCTAssertGreaterThan(after, 4.5)
        XCTAssertLessThan(after, 8)
        // Through all of it the endpoint kept serving.
        XCTAssertEqual(try curl(admin, "/healthz").body, "ok\n")
    }

    func testCheckConfigWarnsAtListenWhenTheAdminAddressIsNotLoopback() throws {
        let echo = try echoBackend()
        let config = ProxyConfig(listeners: [.plain("web", backends: [echo.address])])
        for (address, warns) in [("0.0.0.0:9901", true), ("[::]:9901", true), ("127.0.0.1:9901", false), ("[::1]:9901", false)] {
            let text = withAdmin(config, address)
            let path = try temporary.write("check.toml", text)
            let lines = text.components(separatedBy: "\n")
            let line = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("listen = \(tomlQuoted(address))") }) + 1
            let run = try runSecproxy(["--check-config", "-c", path])
            XCTAssertEqual(run.exitCode, 0, run.stderr)
            let warning =
                "\(path):\(line):1: warning: admin endpoint '\(address)' is not on a loopback address: /metrics and "
                + "/healthz are plain HTTP without authentication; listen on 127.0.0.1 or [::1], or firewall the port"
            if warns {
                XCTAssertEqual(run.stderrLines, [warning], address)
            } else {
                XCTAssertEqual(run.stderrLines, [], address)
            }
            XCTAssertTrue(run.stdout.hasPrefix("\(path): OK (1 listeners"), run.stdout)
        }
    }
}
