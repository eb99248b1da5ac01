import Foundation
import SecProxyTestSupport
import XCTest

/// Connection limits: over the limit a new connection is accepted and closed at once, without a handshake and
/// without a backend (SPEC §3 Slowloris and abuse).
final class LimitsTests: ProxyTestCase {
    func testMaxConnectionsRefusesTheThirdAndKeepsTheFirstTwo() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            tlsListener(backends: [echo.address]),
            server: ["max_connections": 2]
        )
        let client = try driver()
        for id in ["a", "b"] {
            let opened = try client.open(id, .tls(address, serverName: "localhost"))
            XCTAssertTrue(opened.ok, "\(opened)\n\(proxy.outputTail())")
            XCTAssertTrue(try client.echo(id, "hello \(id)").ok)
        }
        try waitUntil(timeout: 5, "two backend connections") { echo.activeConnections == 2 }

        let third = try client.open("c", .tls(address, serverName: "localhost"), timeout: 5)
        XCTAssertFalse(third.ok, "the third connection must be refused: \(third)")
        XCTAssertLessThan(third.elapsedMs ?? 9999, 2000, "refused at once, not after a timeout: \(third)")
        let refused = try proxy.waitForLogs(count: 1, timeout: 10, "a max_connections line") {
            $0["msg"] == "connection closed" && $0["reason"] == "max_connections"
        }
        XCTAssertEqual(refused[0]["tls_version"], "")
        XCTAssertEqual(refused[0]["backend"], "")
        XCTAssertEqual(refused[0]["bytes_in"], "0")
        XCTAssertEqual(echo.connectionCount, 2, "a refused connection must not touch a backend")

        for id in ["a", "b"] {
            XCTAssertTrue(try client.echo(id, "still \(id)").ok)
        }
        // Once one closes, a new connection is accepted again.
        try client.close("a")
        try waitUntil(timeout: 5, "the first connection's line") {
            proxy.connectionLogs.contains { $0["reason"] == "client_closed" }
        }
        let fourth = try client.open("d", .tls(address, serverName: "localhost"))
        XCTAssertTrue(fourth.ok, "\(fourth)")
        XCTAssertTrue(try client.echo("d", "room again").ok)
    }

    func testMaxConnectionsPerIP() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            .plain("raw", backends: [echo.address], settings: ["max_connections_per_ip": 1])
        )
        let client = try driver()
        XCTAssertTrue(try client.open("a", .plain(address)).ok)
        XCTAssertTrue(try client.echo("a", "one").ok)
        let second = try client.open("b", .plain(address))
        if second.ok {
            // The TCP connect itself may succeed: the proxy must then close it at once.
            let closed = try client.waitClosed("b", timeout: 3)
            XCTAssertEqual(closed.closed, true, "\(closed)")
        }
        let refused = try proxy.waitForLogs(count: 1, timeout: 10, "a per_ip_limit line") {
            $0["msg"] == "connection closed" && $0["reason"] == "per_ip_limit"
        }
        XCTAssertEqual(refused[0]["backend"], "")
        XCTAssertEqual(echo.connectionCount, 1)
        XCTAssertTrue(try client.echo("a", "still one").ok)
    }
}
