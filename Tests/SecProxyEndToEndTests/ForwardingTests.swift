import Foundation
import SecProxyTestSupport
import XCTest

/// Bytes through the proxy: echo, large transfers both ways, half-close, backend FIN (SPEC §3 Forwarding).
final class ForwardingTests: ProxyTestCase {
    func testPlainListenerEchoesAndLogsEmptyTLSFields() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(.plain("raw", backends: [echo.address]))
        XCTAssertEqual(address.mode, "plain")
        let result = try python.transfer(.plain(address), payload: .text("plain bytes"), timeout: 10)
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.receivedText, "plain bytes")
        XCTAssertEqual(result.eof, "fin")

        let line = try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort))
        assertHasAllConnectionFields(line)
        let fields = Logfmt.parse(line)
        XCTAssertEqual(fields["listener"], "raw")
        XCTAssertEqual(fields["backend"], echo.address)
        XCTAssertEqual(fields["tls_version"], "")
        XCTAssertEqual(fields["cipher"], "")
        XCTAssertEqual(fields["sni"], "")
        XCTAssertEqual(fields["bytes_in"], "11")
        XCTAssertEqual(fields["bytes_out"], "11")
        XCTAssertEqual(fields["reason"], "client_closed")
    }

    func testLargeTransferBothWaysAtOnceOverTLS() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(tlsListener(backends: [echo.address]))
        let size = 16 << 20
        let result = try python.transfer(.tls(address, serverName: "localhost"), payload: .random(size), timeout: 120)
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.bytesSent, size)
        XCTAssertEqual(result.bytesReceived, size)
        XCTAssertEqual(result.sha256Received, result.sha256Sent)
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["bytes_in"], String(size))
        XCTAssertEqual(fields["bytes_out"], String(size))
    }

    func testLargeTransferBothWaysAtOnceOverPlain() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(.plain("raw", backends: [echo.address]))
        let size = 16 << 20
        let result = try python.transfer(.plain(address), payload: .random(size), timeout: 120)
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.bytesReceived, size)
        XCTAssertEqual(result.sha256Received, result.sha256Sent)
    }

    func testPlainHalfCloseStillDeliversTheReply() throws {
        // The backend answers only after it saw the client's FIN: the other direction must stay open.
        let echo = try echoBackend(replyAfterFIN: true)
        let (proxy, address) = try startProxy(.plain("raw", backends: [echo.address]))
        let result = try python.transfer(.plain(address), payload: .text("sent before FIN"), timeout: 10)
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.receivedText, "sent before FIN")
        XCTAssertEqual(result.eof, "fin")
        XCTAssertEqual(echo.stats.finsReceived, 1, "the client's FIN must reach the backend as a FIN")
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["reason"], "client_closed")
        XCTAssertEqual(fields["bytes_in"], "15")
        XCTAssertEqual(fields["bytes_out"], "15")
    }

    func testTLSHalfCloseStillDeliversTheReply() throws {
        let echo = try echoBackend(replyAfterFIN: true)
        let (proxy, address) = try startProxy(tlsListener(backends: [echo.address]))
        let size = 128 << 10
        let result = try python.transfer(
            ClientOptions(port: address.port, serverName: "localhost", minVersion: "1.3"),
            payload: .random(size),
            timeout: 15
        )
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.bytesReceived, size)
        XCTAssertEqual(result.sha256Received, result.sha256Sent)
        XCTAssertEqual(echo.stats.finsReceived, 1)
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["reason"], "client_closed")
    }

    func testBackendFINIsPassedOnAndLoggedAsBackendClosed() throws {
        let streaming = try StreamingServer(amount: .bytes(3_000_000))
        defer { streaming.stop() }
        let (proxy, address) = try startProxy(tlsListener(backends: [streaming.address]))
        let result = try python.transfer(
            .tls(address, serverName: "localhost"),
            after: .waitForEOF,
            checkPattern: true,
            timeout: 30
        )
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.bytesReceived, 3_000_000)
        XCTAssertEqual(result.patternOk, true)
        XCTAssertNotNil(result.eof)
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["reason"], "backend_closed")
        XCTAssertEqual(fields["bytes_out"], "3000000")
        XCTAssertEqual(fields["bytes_in"], "0")
    }

    func testClientResetIsLoggedAsClientClosed() throws {
        let sink = try sinkBackend()
        let (proxy, address) = try startProxy(.plain("raw", backends: [sink.address]))
        let client = try driver()
        let opened = try client.open("rst", .plain(address))
        XCTAssertTrue(opened.ok, "\(opened)")
        try client.send("rst", "abc")
        try waitUntil(timeout: 5, "the backend got the bytes") { sink.bytesReceived == 3 }
        try client.close("rst", reset: true)
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(opened.localPort)))
        XCTAssertEqual(fields["reason"], "client_closed")
        XCTAssertEqual(fields["bytes_in"], "3")
        try waitUntil(timeout: 10, "the backend connection closed too") { sink.activeConnections == 0 }
    }

    func testConnectionResetBeforeAnyByteStillGetsItsLine() throws {
        // Port scanners and health checkers connect and reset at once: still exactly one line.
        let sink = try sinkBackend()
        let (proxy, address) = try startProxy(.plain("raw", backends: [sink.address]))
        let result = try python.transfer(
            .plain(address),
            payload: .text(""),
            after: .close,
            expectBytes: 0,
            reset: true,
            timeout: 10
        )
        XCTAssertTrue(result.connected, "\(result)")
        // After the RST the kernel no longer knows the peer (getpeername fails), so `client` may be
        // empty; the line must still come, exactly once, and the connection must not stay counted.
        let port = try XCTUnwrap(result.localPort)
        let logs = try proxy.waitForConnectionLogs(count: 1)
        XCTAssertEqual(logs.count, 1, proxy.outputTail())
        let fields = try XCTUnwrap(logs.first)
        XCTAssertTrue(["", "127.0.0.1:\(port)"].contains(fields["client"] ?? "-"), "\(fields)")
        XCTAssertEqual(fields["reason"], "client_closed")
        XCTAssertEqual(fields["bytes_in"], "0")
        XCTAssertEqual(fields["listener"], "raw")
    }

    func testOneConnectionLinePerConnection() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(tlsListener(backends: [echo.address]))
        var ports: [Int] = []
        for index in 0..<5 {
            let result = try python.transfer(.tls(address), payload: .text("n\(index)"), timeout: 10)
            XCTAssertTrue(result.ok, "\(result)")
            ports.append(try XCTUnwrap(result.localPort))
        }
        let logs = try proxy.waitForConnectionLogs(count: 5)
        XCTAssertEqual(logs.count, 5, proxy.outputTail())
        for port in ports {
            XCTAssertEqual(logs.filter { $0["client"] == "127.0.0.1:\(port)" }.count, 1)
        }
        for line in proxy.connectionLogLines { assertHasAllConnectionFields(line) }
    }

    func testJSONLogFormatCarriesTheSameFields() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(tlsListener(backends: [echo.address]), server: ["log_format": "json"])
        let result = try python.transfer(.tls(address, serverName: "localhost"), payload: .text("json"), timeout: 10)
        XCTAssertTrue(result.ok, "\(result)")
        let line = try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort))
        let object = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            "not one JSON object: \(line)"
        )
        for field in Self.connectionFields + ["ts", "level", "msg"] {
            XCTAssertTrue(object.keys.contains(field), "'\(field)' missing from \(line)")
        }
        XCTAssertEqual(object["msg"] as? String, "connection closed")
        XCTAssertEqual(object["tls_version"] as? String, "TLSv1.3")
        XCTAssertEqual(object["reason"] as? String, "client_closed")
        // Not applicable here: empty or null.
        XCTAssertTrue(object["alpn"] is NSNull || (object["alpn"] as? String) == "", line)
    }
}
