import Foundation
import SecProxyTestSupport
import XCTest

/// TLS handshakes as real clients see them, and what the connection line says about them (SPEC §2 `[listener.tls]`,
/// §3 Logs).
final class TLSHandshakeTests: ProxyTestCase {
    func testTLS13EchoAndConnectionLine() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(tlsListener(backends: [echo.address]))
        let result = try python.transfer(
            ClientOptions(port: address.port, serverName: "localhost", caFile: ca.caCertPath, minVersion: "1.3"),
            payload: .text("hello secproxy"),
            timeout: 15
        )
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.version, "TLSv1.3")
        XCTAssertTrue(result.cipher?.hasPrefix("TLS_") ?? false, "\(result)")
        XCTAssertEqual(result.receivedText, "hello secproxy")

        let line = try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort))
        assertHasAllConnectionFields(line)
        let fields = Logfmt.parse(line)
        XCTAssertEqual(fields["msg"], "connection closed")
        XCTAssertEqual(fields["listener"], "web")
        XCTAssertEqual(fields["client"], "127.0.0.1:\(result.localPort!)")
        XCTAssertEqual(fields["backend"], echo.address)
        XCTAssertEqual(fields["sni"], "localhost")
        XCTAssertEqual(fields["alpn"], "")
        XCTAssertEqual(fields["tls_version"], "TLSv1.3")
        XCTAssertEqual(fields["cipher"], result.cipher)
        XCTAssertNotEqual(fields["resumed"], "true")
        XCTAssertEqual(fields["bytes_in"], "14")
        XCTAssertEqual(fields["bytes_out"], "14")
        XCTAssertEqual(fields["reason"], "client_closed")
    }

    func testTLS12WithRSACertificate() throws {
        let echo = try echoBackend()
        let rsa = try ca.serverCertificate("rsa", keyType: .rsa2048)
        let (proxy, address) = try startProxy(tlsListener(backends: [echo.address], cert: rsa))
        let result = try python.transfer(
            ClientOptions(port: address.port, serverName: "localhost", caFile: ca.caCertPath, maxVersion: "1.2"),
            payload: .text("over tls 1.2"),
            timeout: 15
        )
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.version, "TLSv1.2")
        let cipher = try XCTUnwrap(result.cipher)
        // Secure defaults: ECDHE key exchange and an AEAD cipher.
        XCTAssertTrue(cipher.hasPrefix("ECDHE-RSA-"), cipher)
        XCTAssertTrue(cipher.contains("GCM") || cipher.contains("CHACHA20"), cipher)
        XCTAssertEqual(result.receivedText, "over tls 1.2")

        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["tls_version"], "TLSv1.2")
        XCTAssertEqual(fields["cipher"], cipher)
        XCTAssertEqual(fields["reason"], "client_closed")
    }

    func testOpenSSLClientSeesBothVersionsAndAVerifiedChain() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(tlsListener(backends: [echo.address]))
        let tls13 = try OpenSSLClient.connect(port: address.port, serverName: "localhost", caFile: ca.caCertPath)
        XCTAssertTrue(tls13.established, tls13.stderr + proxy.outputTail())
        XCTAssertEqual(tls13.protocolVersion, "TLSv1.3", tls13.stderr)
        XCTAssertTrue(tls13.verified, tls13.stderr)

        let tls12 = try OpenSSLClient.connect(
            port: address.port,
            serverName: "localhost",
            caFile: ca.caCertPath,
            extraArguments: ["-tls1_2"]
        )
        XCTAssertEqual(tls12.protocolVersion, "TLSv1.2", tls12.stderr)
        XCTAssertTrue(tls12.cipher?.hasPrefix("ECDHE-ECDSA-") ?? false, tls12.stderr)
        try proxy.waitForConnectionLogs(count: 2)
    }

    func testTLS11IsRefused() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(tlsListener(backends: [echo.address]))
        let old = try OpenSSLClient.connect(
            port: address.port,
            serverName: "localhost",
            extraArguments: ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]
        )
        XCTAssertFalse(old.established, old.stderr)
        let logs = try proxy.waitForConnectionLogs(count: 1)
        XCTAssertEqual(logs.last?["reason"], "handshake_failed", proxy.outputTail())
        XCTAssertEqual(echo.connectionCount, 0, "a failed handshake must not touch a backend")
    }

    func testMinVersion13RefusesTLS12Clients() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            tlsListener(backends: [echo.address], tlsSettings: ["min_version": "1.3"])
        )
        let result = try python.transfer(
            ClientOptions(port: address.port, serverName: "localhost", maxVersion: "1.2"),
            payload: .text("x"),
            timeout: 10
        )
        XCTAssertFalse(result.handshake, "\(result)")
        let logs = try proxy.waitForConnectionLogs(count: 1)
        XCTAssertEqual(logs[0]["reason"], "handshake_failed")
        XCTAssertEqual(logs[0]["tls_version"], "")
    }

    func testALPNIsNegotiatedAndLogged() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            tlsListener(backends: [echo.address], tlsSettings: ["alpn": ["h2", "http/1.1"]])
        )
        let result = try python.transfer(
            ClientOptions(port: address.port, serverName: "localhost", alpn: ["http/1.1"]),
            payload: .text("alpn"),
            timeout: 10
        )
        XCTAssertTrue(result.ok, "\(result)")
        XCTAssertEqual(result.alpn, "http/1.1")
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["alpn"], "http/1.1")

        // No overlap: the handshake goes on without ALPN.
        let other = try python.transfer(
            ClientOptions(port: address.port, serverName: "localhost", alpn: ["spdy/3"]),
            payload: .text("x"),
            timeout: 10
        )
        XCTAssertTrue(other.ok, "\(other)")
        XCTAssertNil(other.alpn)
    }

    func testNoSNIGetsTheDefaultCertificateAndAnEmptySNIField() throws {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(tlsListener(backends: [echo.address]))
        let result = try python.transfer(ClientOptions(port: address.port), payload: .text("no sni"), timeout: 10)
        XCTAssertTrue(result.ok, "\(result)")
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["sni"], "")
    }
}
