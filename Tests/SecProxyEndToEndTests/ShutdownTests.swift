import Foundation
import SecProxyTestSupport
import XCTest

/// SIGTERM: stop accepting, drain open connections up to `drain_timeout`, exit 0 (SPEC §3 Stop).
final class ShutdownTests: ProxyTestCase {
    func testDrainLetsAnOpenConnectionFinishThenExitsZero() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            tlsListener(backends: [echo.address]),
            server: ["drain_timeout": "20s"]
        )
        let client = try driver()
        let opened = try client.open("old", .tls(address, serverName: "localhost"))
        XCTAssertTrue(opened.ok, "\(opened)")
        XCTAssertTrue(try client.echo("old", "before").ok)

        proxy.send(signal: SIGTERM)
        try proxy.waitForMessage("stopping", timeout: 5)
        // Listening sockets are closed: a new connection is refused.
        try waitUntil(timeout: 5, "new connections refused") {
            let attempt = try client.open("new", .plain(address), timeout: 2)
            if attempt.ok { try client.close("new") }
            return attempt.error == "refused"
        }
        // The open connection still works during the drain.
        let during = try client.echo("old", "during drain")
        XCTAssertTrue(during.ok, "\(during)\n\(proxy.outputTail())")
        XCTAssertTrue(proxy.process.isRunning, "the daemon must wait for the open connection")

        try client.close("old")
        XCTAssertEqual(try proxy.waitForExitCode(timeout: 10), 0, proxy.outputTail())
        let line = try connectionLine(of: proxy, clientPort: try XCTUnwrap(opened.localPort))
        XCTAssertEqual(Logfmt.parse(line)["reason"], "client_closed")
        XCTAssertTrue(proxy.events.contains { $0["msg"] == "stopped" }, proxy.outputTail())
    }

    func testDrainTimeoutClosesAStuckConnectionWithReasonShutdown() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            .plain("raw", backends: [echo.address], settings: ["idle_timeout": "1m"]),
            server: ["drain_timeout": "500ms"]
        )
        let client = try driver()
        let opened = try client.open("stuck", .plain(address))
        XCTAssertTrue(opened.ok)
        XCTAssertTrue(try client.echo("stuck", "hold on").ok)

        let signalled = Date()
        proxy.send(signal: SIGTERM)
        XCTAssertEqual(try proxy.waitForExitCode(timeout: 10), 0, proxy.outputTail())
        let took = Date().timeIntervalSince(signalled)
        XCTAssertGreaterThanOrEqual(took, 0.4, "exited before drain_timeout")
        XCTAssertLessThan(took, 0.5 + 3, "exited long after drain_timeout")
        let closed = try client.waitClosed("stuck", timeout: 5)
        XCTAssertEqual(closed.closed, true, "\(closed)")
        let line = try connectionLine(of: proxy, clientPort: try XCTUnwrap(opened.localPort))
        XCTAssertEqual(Logfmt.parse(line)["reason"], "shutdown")
        assertHasAllConnectionFields(line)
    }

    func testIdleDaemonStopsAtOnceOnSIGTERM() throws {
        let echo = try echoBackend()
        let (proxy, _) = try startProxy(.plain("raw", backends: [echo.address]), server: ["drain_timeout": "30s"])
        let signalled = Date()
        proxy.send(signal: SIGTERM)
        XCTAssertEqual(try proxy.waitForExitCode(timeout: 10), 0, proxy.outputTail())
        XCTAssertLessThan(Date().timeIntervalSince(signalled), 5, "no open connection: no reason to wait")
        let messages = proxy.events.compactMap { $0["msg"] }
        XCTAssertTrue(messages.contains("stopping"), "\(messages)")
        XCTAssertEqual(messages.last, "stopped", "\(messages)")
    }

    func testListeningAndReadyLinesForEachListener() throws {
        let echo = try echoBackend()
        let proxy = try startProxy(
            ProxyConfig(listeners: [
                tlsListener("secure", backends: [echo.address]),
                .plain("clear", backends: [echo.address]),
            ])
        )
        let secure = try proxy.address(of: "secure")
        let clear = try proxy.address(of: "clear")
        XCTAssertEqual(secure.mode, "tls")
        XCTAssertEqual(clear.mode, "plain")
        XCTAssertNotEqual(secure.port, clear.port)
        let messages = proxy.events.compactMap { $0["msg"] }
        let ready = try XCTUnwrap(messages.firstIndex(of: "ready"))
        XCTAssertEqual(messages[..<ready].filter { $0 == "listening" }.count, 2, "\(messages)")
        XCTAssertTrue(try python.transfer(.tls(secure), payload: .text("s")).ok)
        XCTAssertTrue(try python.transfer(.plain(clear), payload: .text("c")).ok)
    }
}
