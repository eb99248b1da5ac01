import Foundation
import SecProxyTestSupport
import XCTest

/// Deadlines: handshake (slowloris), idle, half-close (SPEC §2 `[defaults]`, §3 Slowloris and abuse).
final class TimeoutTests: ProxyTestCase {
    /// Extra time allowed on top of a deadline for scheduling on a loaded 2-core CI machine.
    let margin = 1.5

    func testHandshakeDeadlineIsNotExtendedByATrickle() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            tlsListener(backends: [echo.address], settings: ["handshake_timeout": "500ms"])
        )
        let result = try python.trickle(port: address.port, step: 1, intervalMs: 100, timeout: 10)
        XCTAssertTrue(result.closed, "a client trickling one byte every 100 ms must be cut off: \(result)")
        let after = try XCTUnwrap(result.closedAfterMs) / 1000
        XCTAssertGreaterThanOrEqual(after, 0.4, "closed before the deadline")
        XCTAssertLessThanOrEqual(after, 0.5 + margin, "closed long after the deadline")
        XCTAssertLessThan(result.bytesSent, result.totalBytes, "the ClientHello must not have been completed")
        let logs = try proxy.waitForConnectionLogs(count: 1)
        XCTAssertEqual(logs[0]["reason"], "handshake_timeout", proxy.outputTail())
        XCTAssertEqual(logs[0]["tls_version"], "")
        XCTAssertEqual(echo.connectionCount, 0, "no backend before the handshake")
        for line in proxy.connectionLogLines { assertHasAllConnectionFields(line) }
    }

    func testSilentTLSClientHitsTheHandshakeDeadline() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            tlsListener(backends: [echo.address]),
            defaults: ["handshake_timeout": "300ms"]
        )
        let client = try driver()
        XCTAssertTrue(try client.open("silent", .plain(address)).ok)
        let closed = try client.waitClosed("silent", timeout: 0.3 + margin + 1)
        XCTAssertEqual(closed.closed, true, "\(closed)")
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(closed.afterMs), 200)
        let logs = try proxy.waitForConnectionLogs(count: 1)
        XCTAssertEqual(logs[0]["reason"], "handshake_timeout")
    }

    func testPlainListenerIgnoresTheHandshakeTimeout() throws {
        let echo = try echoBackend()
        let (_, address) = try startProxy(
            .plain("raw", backends: [echo.address], settings: ["handshake_timeout": "200ms", "idle_timeout": "10s"])
        )
        let client = try driver()
        XCTAssertTrue(try client.open("quiet", .plain(address)).ok)
        // Waiting is the point: a plaintext client may stay silent past handshake_timeout.
        let stillOpen = try client.waitClosed("quiet", timeout: 0.8)
        XCTAssertEqual(stillOpen.closed, false, "\(stillOpen)")
        let echoed = try client.echo("quiet", "still here")
        XCTAssertTrue(echoed.ok, "\(echoed)")
    }

    func testIdleTimeoutClosesASilentConnection() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            tlsListener(backends: [echo.address], settings: ["idle_timeout": "300ms"])
        )
        let result = try python.transfer(
            .tls(address, serverName: "localhost"),
            payload: .text("ping"),
            after: .waitForEOF,
            timeout: 10
        )
        XCTAssertNil(result.error, "\(result)")
        XCTAssertEqual(result.receivedText, "ping")
        XCTAssertNotNil(result.eof, "\(result)")
        let idle = try XCTUnwrap(result.eofAfterSendMs) / 1000
        XCTAssertGreaterThanOrEqual(idle, 0.25)
        XCTAssertLessThanOrEqual(idle, 0.3 + margin)
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["reason"], "idle_timeout")
        XCTAssertEqual(fields["bytes_in"], "4")
        XCTAssertEqual(fields["bytes_out"], "4")
        try waitUntil(timeout: 5, "the backend side closed too") { echo.activeConnections == 0 }
    }

    func testTrafficKeepsAConnectionAlivePastTheIdleTimeout() throws {
        let echo = try echoBackend()
        let (_, address) = try startProxy(
            .plain("raw", backends: [echo.address], settings: ["idle_timeout": "400ms"])
        )
        let client = try driver()
        XCTAssertTrue(try client.open("busy", .plain(address)).ok)
        let started = Date()
        var rounds = 0
        // Echo every ~150 ms for about three idle periods.
        while Date().timeIntervalSince(started) < 1.2 {
            let reply = try client.echo("busy", "tick\(rounds)")
            XCTAssertTrue(reply.ok, "round \(rounds): \(reply)")
            rounds += 1
            let pause = try client.waitClosed("busy", timeout: 0.15)
            XCTAssertEqual(pause.closed, false, "closed while active: \(pause)")
        }
        XCTAssertGreaterThan(rounds, 3)
    }

    func testHalfCloseTimeout() throws {
        // The backend keeps its side open and silent after the client's FIN.
        let sink = try sinkBackend(closeOnFIN: false)
        let (proxy, address) = try startProxy(
            .plain("raw", backends: [sink.address], settings: ["half_close_timeout": "300ms", "idle_timeout": "30s"])
        )
        let client = try driver()
        let opened = try client.open("half", .plain(address))
        XCTAssertTrue(opened.ok)
        try client.send("half", "data then FIN")
        try waitUntil(timeout: 5, "the backend got the bytes") { sink.bytesReceived == 13 }
        try client.shutdownWrite("half")
        try waitUntil(timeout: 5, "the backend saw the FIN") { sink.stats.finsReceived == 1 }
        let closed = try client.waitClosed("half", timeout: 0.3 + margin + 1)
        XCTAssertEqual(closed.closed, true, "\(closed)")
        XCTAssertLessThanOrEqual(try XCTUnwrap(closed.afterMs) / 1000, 0.3 + margin)
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(opened.localPort)))
        XCTAssertEqual(fields["reason"], "idle_timeout")
        XCTAssertEqual(fields["bytes_in"], "13")
    }
}
