import Foundation
import SecProxyTestSupport
import XCTest

/// Backend choice: failover past a dead backend, round-robin shares, all backends down (SPEC §3 Forwarding,
/// Balancing).
final class BalancingTests: ProxyTestCase {
    func testFailoverWhenTheFirstBackendIsDown() throws {
        let dead = try RefusingPort()
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(tlsListener(backends: [dead.address, echo.address]))
        for index in 0..<4 {
            let result = try python.transfer(.tls(address), payload: .text("try \(index)"), timeout: 10)
            XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
            XCTAssertEqual(result.receivedText, "try \(index)")
            let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
            XCTAssertEqual(fields["backend"], echo.address)
            XCTAssertEqual(fields["reason"], "client_closed")
        }
        XCTAssertEqual(echo.connectionCount, 4)
    }

    func testRoundRobinGivesEqualSharesOverSequentialConnections() throws {
        let first = try echoBackend()
        let second = try echoBackend()
        let (proxy, address) = try startProxy(
            .plain("raw", backends: [first.address, second.address], settings: ["balance": "round_robin"])
        )
        let total = 11
        for index in 0..<total {
            let result = try python.transfer(.plain(address), payload: .text("rr\(index)"), timeout: 10)
            XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        }
        try proxy.waitForConnectionLogs(count: total)
        let shares = [first.connectionCount, second.connectionCount]
        XCTAssertEqual(shares.reduce(0, +), total)
        XCTAssertLessThanOrEqual(abs(shares[0] - shares[1]), 1, "shares \(shares)")
        let logged = Dictionary(grouping: proxy.connectionLogs.compactMap { $0["backend"] }, by: { $0 }).mapValues(
            \.count
        )
        XCTAssertEqual(logged[first.address], shares[0])
        XCTAssertEqual(logged[second.address], shares[1])
    }

    func testAllBackendsDownClosesTheClient() throws {
        let dead1 = try RefusingPort()
        let dead2 = try RefusingPort()
        let (proxy, address) = try startProxy(tlsListener(backends: [dead1.address, dead2.address]))
        let result = try python.transfer(.tls(address), payload: .text("anyone?"), after: .waitForEOF, timeout: 10)
        XCTAssertNotNil(result.eof, "the client must be closed: \(result)")
        XCTAssertEqual(result.bytesReceived, 0)
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["reason"], "backend_unavailable")
        XCTAssertEqual(fields["bytes_out"], "0")
    }

    func testAllBackendsDownOnAPlainListener() throws {
        let dead = try RefusingPort()
        let (proxy, address) = try startProxy(.plain("raw", backends: [dead.address]))
        let result = try python.transfer(.plain(address), payload: .text("x"), after: .waitForEOF, timeout: 10)
        XCTAssertNotNil(result.eof, "\(result)")
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["reason"], "backend_unavailable")
    }
}
