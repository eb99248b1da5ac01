import Foundation
import NIOCore
import NIOPosix
import SecProxyTestSupport
import XCTest

@testable import SecProxyCore

/// The PROXY protocol end to end (SPEC §3 PROXY protocol; `proxy_protocol`, `accept_proxy_protocol`,
/// `handshake_timeout`): the daemon as a subprocess, a real backend on 127.0.0.1 that records the exact bytes it
/// received on each connection, and Python clients that send raw bytes (a PROXY header) before the payload or
/// the TLS handshake.
final class ProxyProtocolEndToEndTests: ProxyTestCase {
    private var recorders: [RecordingBackend] = []
    private var clientScript = ""

    /// The header a balancer in front would send for client 203.0.113.7:5555 reaching 198.51.100.1:443.
    private let balancedV1 = "PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\n"

    override func setUpWithError() throws {
        try super.setUpWithError()
        clientScript = try temporary.write("pp_client.py", Self.clientSource)
    }

    override func tearDown() {
        for recorder in recorders { recorder.stop() }
        recorders = []
        super.tearDown()
    }

    // MARK: - proxy_protocol: the header secproxy sends

    func testV1HeaderOnPlainListenerThenClientBytesUnchanged() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            .plain("raw", backends: [backend.address], settings: ["proxy_protocol": "v1"])
        )
        // Bytes a text protocol would never send, to show they pass unchanged after the header.
        let payload: [UInt8] = Array("hello\r\nPROXY not a header\r\n".utf8) + [0x00, 0xFF, 0x0D, 0x0A, 0x7F]
        let result = try runClient(ClientRun(port: address.port, payload: payload, expect: 4 + payload.count))
        XCTAssertNil(result.error, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.received, Array("ack:".utf8) + payload, "the backend's reply must reach the client")

        let clientPort = try XCTUnwrap(result.localPort)
        try backend.waitUntilClosed(count: 1)
        let expectedHeader = "PROXY TCP4 127.0.0.1 127.0.0.1 \(clientPort) \(address.port)\r\n"
        XCTAssertEqual(
            backend.received(0),
            Array(expectedHeader.utf8) + payload,
            "backend got: \(printable(backend.received(0)))"
        )
        XCTAssertEqual(backend.connectionCount, 1)

        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: clientPort))
        XCTAssertEqual(fields["client"], "127.0.0.1:\(clientPort)")
        XCTAssertEqual(fields["backend"], backend.address)
        XCTAssertEqual(fields["bytes_in"], String(payload.count), "the header is not client bytes")
        XCTAssertEqual(fields["bytes_out"], String(4 + payload.count))
        XCTAssertEqual(fields["reason"], "client_closed")
    }

    func testV2HeaderOnTLSListenerCarriesAddressALPNSNIAndTLS() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            tlsListener(
                backends: [backend.address],
                settings: ["proxy_protocol": "v2"],
                tlsSettings: ["alpn": ["http/1.1"]]
            )
        )
        let payload = Array("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        let result = try runClient(
            ClientRun(
                port: address.port,
                tls: true,
                serverName: "localhost",
                alpn: ["h2", "http/1.1"],
                payload: payload,
                expect: 4 + payload.count
            )
        )
        XCTAssertNil(result.error, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.version, "TLSv1.3")
        XCTAssertEqual(result.alpn, "http/1.1")
        XCTAssertEqual(result.received, Array("ack:".utf8) + payload)
        let clientPort = try XCTUnwrap(result.localPort)
        let cipher = try XCTUnwrap(result.cipher)

        try backend.waitUntilClosed(count: 1)
        let received = backend.received(0)
        guard case .header(let header, let consumed) = ProxyProtocolHeader.parse(ByteBuffer(bytes: received)) else {
            return XCTFail("no valid v2 header: \(ProxyProtocolHeader.parse(ByteBuffer(bytes: received))) in \(hex(received))")
        }
        XCTAssertEqual(received.first, 0x0D, "a v2 header (binary signature), not v1 text")
        assertInet(header, source: ("127.0.0.1", clientPort), destination: ("127.0.0.1", address.port))
        XCTAssertEqual(header.alpn, "http/1.1")
        XCTAssertEqual(header.authority, "localhost", "authority is the SNI the client sent")
        let tls = try XCTUnwrap(header.tls, "no TLS TLV (0x20)")
        XCTAssertEqual(tls.version, "TLSv1.3")
        XCTAssertEqual(tls.cipher, cipher, "the cipher the client negotiated")
        XCTAssertNil(tls.clientCommonName, "no client certificate was presented")
        XCTAssertFalse(tls.clientCertificateVerified)
        XCTAssertEqual(Array(received[consumed...]), payload, "the payload follows the header unchanged")

        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: clientPort))
        XCTAssertEqual(fields["cipher"], cipher)
        XCTAssertEqual(fields["alpn"], "http/1.1")
        XCTAssertEqual(fields["sni"], "localhost")
        XCTAssertEqual(fields["bytes_in"], String(payload.count))
    }

    // MARK: - accept_proxy_protocol: the header a balancer sends

    func testAcceptedV1HeaderNamesTheClientForLogAndBackend() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            .plain(
                "raw",
                backends: [backend.address],
                settings: ["proxy_protocol": "v1", "accept_proxy_protocol": true]
            )
        )
        let payload = Array("payload after the balancer's header".utf8)
        // Header and payload in one write: the decoder must pass on what follows the header in the same read.
        let result = try runClient(
            ClientRun(port: address.port, prefix: Array(balancedV1.utf8), payload: payload, expect: 4 + payload.count)
        )
        XCTAssertNil(result.error, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.received, Array("ack:".utf8) + payload)

        try backend.waitUntilClosed(count: 1)
        XCTAssertEqual(
            backend.received(0),
            Array(balancedV1.utf8) + payload,
            "the backend's header names the client (and address) of the received header; got "
                + printable(backend.received(0))
        )
        let line = try connectionLine(of: proxy, clientPort: 5555)
        let fields = Logfmt.parse(line)
        XCTAssertEqual(fields["client"], "203.0.113.7:5555", line)
        XCTAssertEqual(fields["reason"], "client_closed", line)
        XCTAssertEqual(fields["bytes_in"], String(payload.count), "the received header is not client bytes: \(line)")
        XCTAssertFalse(
            proxy.connectionLogs.contains { $0["client"] == "127.0.0.1:\(result.localPort ?? -1)" },
            "the balancer's socket address must not be logged as the client"
        )
    }

    func testAcceptedV2HeaderNamesTheClientForLogAndBackend() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            .plain(
                "raw",
                backends: [backend.address],
                settings: ["proxy_protocol": "v1", "accept_proxy_protocol": true]
            )
        )
        let sent = ProxyProtocolHeader(
            addresses: .inet(
                source: try SocketAddress(ipAddress: "203.0.113.7", port: 5555),
                destination: try SocketAddress(ipAddress: "198.51.100.1", port: 443)
            )
        )
        let prefix = Array(sent.encodeV2().readableBytesView)
        let payload: [UInt8] = Array("binary-safe".utf8) + [0x00, 0x0D, 0x0A, 0x0D, 0x0A, 0x00]
        let result = try runClient(ClientRun(port: address.port, prefix: prefix, payload: payload, expect: 4 + payload.count))
        XCTAssertNil(result.error, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.received, Array("ack:".utf8) + payload)

        try backend.waitUntilClosed(count: 1)
        XCTAssertEqual(
            backend.received(0),
            Array(balancedV1.utf8) + payload,
            "got \(printable(backend.received(0)))"
        )
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: 5555))
        XCTAssertEqual(fields["client"], "203.0.113.7:5555")
        XCTAssertEqual(fields["reason"], "client_closed")
    }

    func testAcceptedHeaderThenRealTLSHandshake() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            tlsListener(
                backends: [backend.address],
                settings: ["proxy_protocol": "v2", "accept_proxy_protocol": true],
                tlsSettings: ["alpn": ["http/1.1"]]
            )
        )
        let payload = Array("inside TLS, behind a balancer".utf8)
        let result = try runClient(
            ClientRun(
                port: address.port,
                prefix: Array(balancedV1.utf8),
                tls: true,
                serverName: "localhost",
                alpn: ["http/1.1"],
                payload: payload,
                expect: 4 + payload.count
            )
        )
        XCTAssertNil(result.error, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.version, "TLSv1.3")
        XCTAssertEqual(result.received, Array("ack:".utf8) + payload)

        try backend.waitUntilClosed(count: 1)
        let received = backend.received(0)
        guard case .header(let header, let consumed) = ProxyProtocolHeader.parse(ByteBuffer(bytes: received)) else {
            return XCTFail("no valid v2 header in \(hex(received))")
        }
        assertInet(header, source: ("203.0.113.7", 5555), destination: ("198.51.100.1", 443))
        XCTAssertEqual(header.authority, "localhost")
        XCTAssertEqual(header.alpn, "http/1.1")
        XCTAssertEqual(header.tls?.version, "TLSv1.3")
        XCTAssertEqual(header.tls?.cipher, result.cipher)
        XCTAssertEqual(Array(received[consumed...]), payload)

        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: 5555))
        XCTAssertEqual(fields["client"], "203.0.113.7:5555")
        XCTAssertEqual(fields["tls_version"], "TLSv1.3")
        XCTAssertEqual(fields["sni"], "localhost")
    }

    // MARK: - accept_proxy_protocol: malformed or missing header

    func testMalformedHeadersOnPlainListenerAreRefusedBeforeAnyBackend() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            .plain(
                "raw",
                backends: [backend.address],
                settings: ["proxy_protocol": "v1", "accept_proxy_protocol": true, "handshake_timeout": "10s"]
            )
        )
        let v2BadCommand: [UInt8] = {
            var bytes = Array(
                ProxyProtocolHeader(
                    addresses: .inet(
                        source: try! SocketAddress(ipAddress: "203.0.113.7", port: 5555),
                        destination: try! SocketAddress(ipAddress: "198.51.100.1", port: 443)
                    )
                ).encodeV2().readableBytesView
            )
            bytes[12] = 0x22  // version 2, command 2: neither LOCAL nor PROXY
            return bytes
        }()
        let cases: [(String, [UInt8])] = [
            ("garbage (an HTTP request)", Array("GET / HTTP/1.1\r\nHost: example\r\n\r\n".utf8)),
            ("PROXY TCP5", Array("PROXY TCP5 203.0.113.7 198.51.100.1 5555 443\r\n".utf8)),
            ("IPv6 literal in a TCP4 line", Array("PROXY TCP4 ::1 198.51.100.1 5555 443\r\n".utf8)),
            ("port out of range", Array("PROXY TCP4 203.0.113.7 198.51.100.1 65536 443\r\n".utf8)),
            ("no CRLF within 107 bytes", Array(("PROXY TCP4 " + String(repeating: "1", count: 120)).utf8)),
            ("v2 with command 2", v2BadCommand),
        ]
        for (name, bytes) in cases {
            // Whatever the proxy does, the client keeps reading until it is closed (or 5 s).
            let result = try runClient(ClientRun(port: address.port, prefix: bytes, timeout: 5))
            let clientPort = try XCTUnwrap(result.localPort, "\(name): \(result)")
            XCTAssertTrue(result.closed, "\(name): the proxy must close the connection: \(result)")
            XCTAssertEqual(result.received, [], "\(name): nothing may come back")
            let line = try connectionLine(of: proxy, clientPort: clientPort)
            let fields = Logfmt.parse(line)
            XCTAssertEqual(fields["reason"], "proxy_protocol_invalid", "\(name): \(line)")
            XCTAssertEqual(fields["client"], "127.0.0.1:\(clientPort)", "\(name): no header, the socket's peer: \(line)")
            XCTAssertEqual(fields["backend"], "", "\(name): \(line)")
            XCTAssertLessThan(result.elapsedMs ?? 1e9, 3000, "\(name): refused at once, not at a deadline: \(result)")
        }
        XCTAssertEqual(backend.connectionCount, 0, "no backend may be contacted for a malformed header")
        XCTAssertEqual(proxy.connectionLogLines.count, cases.count, proxy.outputTail())
    }

    func testOnlyTrustedSourcesMayConnectWhenTheListIsSet() throws {
        let backend = try recordingBackend()
        let (untrusted, untrustedAddress) = try startProxy(
            .plain(
                "lb", backends: [backend.address],
                settings: ["accept_proxy_protocol": true, "proxy_protocol_trusted": ["10.0.0.0/8", "2001:db8::/32"]]
            )
        )
        let untrustedPort = untrustedAddress.port
        // A peer outside every range is closed at accept: its bytes, a valid header included, are never read.
        let refused = try runClient(
            ClientRun(port: untrustedPort, prefix: Array(balancedV1.utf8), payload: Array("x".utf8), timeout: 5)
        )
        XCTAssertTrue(refused.closed, "\(refused)")
        XCTAssertEqual(refused.received, [])
        let fields = Logfmt.parse(try connectionLine(of: untrusted, clientPort: try XCTUnwrap(refused.localPort)))
        XCTAssertEqual(fields["reason"], "proxy_protocol_invalid", "\(fields)")
        XCTAssertEqual(fields["error"], "untrusted source", "\(fields)")
        XCTAssertEqual(fields["client"], "127.0.0.1:\(refused.localPort ?? -1)", "the socket's peer: \(fields)")
        XCTAssertEqual(backend.connectionCount, 0, "an untrusted source never reaches a backend")

        // The same client from a listed address goes through, and its header is believed.
        let (trusted, trustedAddress) = try startProxy(
            .plain(
                "lb2", backends: [backend.address],
                settings: ["accept_proxy_protocol": true, "proxy_protocol_trusted": ["10.0.0.0/8", "127.0.0.1"]]
            )
        )
        let payload = Array("through".utf8)
        let result = try runClient(
            ClientRun(
                port: trustedAddress.port, prefix: Array(balancedV1.utf8), payload: payload,
                expect: 4 + payload.count
            )
        )
        XCTAssertNil(result.error, "\(result)\n\(trusted.outputTail())")
        XCTAssertEqual(result.received, Array("ack:".utf8) + payload)
        XCTAssertEqual(Logfmt.parse(try connectionLine(of: trusted, clientPort: 5555))["client"], "203.0.113.7:5555")
    }

    func testTLSClientHelloWithoutHeaderIsRefused() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            tlsListener(
                backends: [backend.address],
                settings: ["proxy_protocol": "v2", "accept_proxy_protocol": true]
            )
        )
        let result = try runClient(
            ClientRun(port: address.port, tls: true, serverName: "localhost", payload: Array("x".utf8), timeout: 5)
        )
        let clientPort = try XCTUnwrap(result.localPort, "\(result)")
        XCTAssertNotNil(result.error, "the handshake must fail: \(result)")
        XCTAssertNil(result.version, "no TLS session may be set up: \(result)")
        let line = try connectionLine(of: proxy, clientPort: clientPort)
        let fields = Logfmt.parse(line)
        XCTAssertEqual(fields["reason"], "proxy_protocol_invalid", line)
        XCTAssertEqual(fields["tls_version"], "", line)
        XCTAssertEqual(backend.connectionCount, 0)
    }

    func testMissingHeaderOnPlainListenerIsCutAtHandshakeTimeout() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            .plain(
                "raw",
                backends: [backend.address],
                settings: ["proxy_protocol": "v1", "accept_proxy_protocol": true, "handshake_timeout": "400ms"]
            )
        )
        // One client silent, one stuck halfway through a header: both wait for a header that never completes.
        let silent = try startClient(ClientRun(port: address.port, timeout: 5))
        let partial = try startClient(ClientRun(port: address.port, prefix: Array("PROXY TCP4 203.0.".utf8), timeout: 5))
        for (name, run) in [("silent", silent), ("partial header", partial)] {
            let result = try run.result()
            let clientPort = try XCTUnwrap(result.localPort, "\(name): \(result)")
            XCTAssertTrue(result.closed, "\(name): \(result)")
            let seconds = (result.elapsedMs ?? 1e9) / 1000
            XCTAssertGreaterThanOrEqual(seconds, 0.35, "\(name): closed before the 400 ms deadline: \(result)")
            XCTAssertLessThanOrEqual(seconds, 1.5, "\(name): closed long after the 400 ms deadline: \(result)")
            let line = try connectionLine(of: proxy, clientPort: clientPort)
            let fields = Logfmt.parse(line)
            XCTAssertEqual(fields["reason"], "handshake_timeout", "\(name): \(line)")
            let duration = Int(fields["duration_ms"] ?? "") ?? -1
            XCTAssertTrue((350...1500).contains(duration), "\(name): duration_ms \(duration): \(line)")
        }
        XCTAssertEqual(backend.connectionCount, 0)
    }

    // MARK: - Per-client limits apply to the address in the header

    func testPerIPLimitCountsTheHeaderAddress() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            .plain(
                "raw",
                backends: [backend.address],
                settings: ["accept_proxy_protocol": true, "max_connections_per_ip": 1]
            )
        )
        let client = try driver()
        let first = try client.open("a", .plain(address))
        XCTAssertTrue(first.ok, "\(first)")
        try client.send("a", "PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\none")
        let reply = try client.receive("a", count: 7)
        XCTAssertEqual(reply.data, "ack:one", "\(reply)\n\(proxy.outputTail())")
        XCTAssertEqual(backend.activeConnections, 1)

        // Same client IP in the header, another port: over max_connections_per_ip = 1.
        let second = try client.open("b", .plain(address))
        XCTAssertTrue(second.ok, "\(second)")
        try client.send("b", "PROXY TCP4 203.0.113.7 198.51.100.1 5556 443\r\ntwo")
        let closed = try client.waitClosed("b", timeout: 5)
        XCTAssertEqual(closed.closed, true, "the second connection from 203.0.113.7 must be closed: \(closed)")
        XCTAssertEqual(closed.bytes, 0, "\(closed)")
        let line = try connectionLine(of: proxy, clientPort: 5556)
        let fields = Logfmt.parse(line)
        XCTAssertEqual(fields["reason"], "per_ip_limit", line)
        XCTAssertEqual(fields["client"], "203.0.113.7:5556", line)
        XCTAssertEqual(fields["backend"], "", line)
        XCTAssertEqual(backend.connectionCount, 1, "the refused connection must not reach a backend")

        // The first is untouched, and once it ends the address may connect again.
        try client.send("a", "more")
        XCTAssertEqual(try client.receive("a", count: 4).data, "more")
        try client.close("a")
        XCTAssertEqual(Logfmt.parse(try connectionLine(of: proxy, clientPort: 5555))["reason"], "client_closed")
        try client.open("c", .plain(address))
        try client.send("c", "PROXY TCP4 203.0.113.7 198.51.100.1 5557 443\r\nthree")
        let again = try client.receive("c", count: 9)
        XCTAssertEqual(again.data, "ack:three", "the count must be released when the connection ends: \(again)")
        XCTAssertEqual(backend.connectionCount, 2)
    }

    func testPerIPLimitServesDifferentHeaderAddressesFromTheSameSocketAddress() throws {
        let backend = try recordingBackend()
        let (proxy, address) = try startProxy(
            .plain(
                "raw",
                backends: [backend.address],
                settings: ["accept_proxy_protocol": true, "max_connections_per_ip": 1]
            )
        )
        // Both sockets come from 127.0.0.1 (the "balancer"); the headers name two different clients.
        let client = try driver()
        for (id, ip, port) in [("a", "203.0.113.7", 5555), ("b", "203.0.113.8", 5555)] {
            let opened = try client.open(id, .plain(address))
            XCTAssertTrue(opened.ok, "\(opened)")
            try client.send(id, "PROXY TCP4 \(ip) 198.51.100.1 \(port) 443\r\nhi-\(id)")
            let reply = try client.receive(id, count: 8)
            XCTAssertEqual(reply.data, "ack:hi-\(id)", "\(id) from \(ip) must be served: \(reply)\n\(proxy.outputTail())")
        }
        XCTAssertEqual(backend.activeConnections, 2, "both held at once")
        XCTAssertEqual(proxy.connectionLogLines, [], "nothing refused: \(proxy.connectionLogLines)")
        for id in ["a", "b"] {
            try client.send(id, "!")
            XCTAssertEqual(try client.receive(id, count: 1).data, "!")
            try client.close(id)
        }
        let logs = try proxy.waitForConnectionLogs(count: 2)
        XCTAssertEqual(Set(logs.compactMap { $0["client"] }), ["203.0.113.7:5555", "203.0.113.8:5555"])
        XCTAssertEqual(Set(logs.compactMap { $0["reason"] }), ["client_closed"])
        try backend.waitUntilClosed(count: 2)
        // proxy_protocol is off: the backend gets only what followed each client's header.
        XCTAssertEqual(
            Set([backend.received(0), backend.received(1)].map(printable)),
            Set(["hi-a!", "hi-b!"].map { printable(Array($0.utf8)) })
        )
    }

    // MARK: - Helpers

    private func recordingBackend() throws -> RecordingBackend {
        let backend = try RecordingBackend()
        recorders.append(backend)
        return backend
    }

    private func assertInet(
        _ header: ProxyProtocolHeader,
        source: (String, Int),
        destination: (String, Int),
        file: StaticString = #filePath,
        line: UInt = #line
    ) {
        guard case .inet(let gotSource, let gotDestination) = header.addresses else {
            return XCTFail("addresses \(header.addresses), expected TCP", file: file, line: line)
        }
        XCTAssertEqual(gotSource.ipAddress, source.0, "source", file: file, line: line)
        XCTAssertEqual(gotSource.port, source.1, "source port", file: file, line: line)
        XCTAssertEqual(gotDestination.ipAddress, destination.0, "destination", file: file, line: line)
        XCTAssertEqual(gotDestination.port, destination.1, "destination port", file: file, line: line)
    }

    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    private func printable(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self).debugDescription
    }

    /// One run of `pp_client.py`.
    struct ClientRun {
        var port: Int
        /// Raw bytes sent on the TCP socket first (before any TLS).
        var prefix: [UInt8] = []
        var tls = false
        var serverName: String?
        var alpn: [String]?
        /// Sent after the prefix (inside TLS when `tls`).
        var payload: [UInt8] = []
        /// Bytes to read, then close; nil: read until the server closes.
        var expect: Int?
        var timeout: TimeInterval = 10

        var json: String {
            var object: [String: Any] = [
                "port": port, "tls": tls, "timeout": timeout,
                "prefix_hex": prefix.map { String(format: "%02x", $0) }.joined(),
                "payload_hex": payload.map { String(format: "%02x", $0) }.joined(),
            ]
            if let serverName { object["server_name"] = serverName }
            if let alpn { object["alpn"] = alpn }
            if let expect { object["expect"] = expect }
            let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// What `pp_client.py` saw.
    struct ClientResult: Decodable, CustomStringConvertible {
        var localPort: Int?
        var version: String?
        var cipher: String?
        var alpn: String?
        var receivedHex: String
        /// `fin`, `reset`, `timeout`, or nil when `expect` bytes were read.
        var how: String?
        var error: String?
        /// From connect to the end of the run (the close seen, or `expect` bytes read).
        var elapsedMs: Double?

        var received: [UInt8] {
            var bytes: [UInt8] = []
            var index = receivedHex.startIndex
            while index < receivedHex.endIndex {
                let next = receivedHex.index(index, offsetBy: 2)
                bytes.append(UInt8(receivedHex[index..<next], radix: 16) ?? 0)
                index = next
            }
            return bytes
        }

        /// The server closed the connection (FIN or RST).
        var closed: Bool { how == "fin" || how == "reset" || error == "eof" || error == "reset" }

        var description: String {
            "ClientResult(port: \(localPort ?? -1), version: \(version ?? "-"), cipher: \(cipher ?? "-"), "
                + "alpn: \(alpn ?? "-"), received: \(receivedHex.prefix(200)), how: \(how ?? "-"), "
                + "error: \(error ?? "-"), elapsed: \(elapsedMs ?? -1) ms)"
        }
    }

    /// A client running in the background.
    struct RunningClient {
        let process: Subprocess
        let timeout: TimeInterval

        func result() throws -> ClientResult {
            let status: ExitStatus
            do {
                status = try process.waitForExit(timeout: timeout + 10)
            } catch {
                process.terminate(grace: 1)
                throw error
            }
            guard status == .exited(0), let line = process.stdoutLines.last else {
                throw SubprocessError("pp_client.py failed (\(status)):\n\(process.outputTail())")
            }
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            return try decoder.decode(ClientResult.self, from: Data(line.utf8))
        }
    }

    private func startClient(_ run: ClientRun) throws -> RunningClient {
        let process = Subprocess(executable: python.python, arguments: [clientScript, run.json])
        try process.start()
        return RunningClient(process: process, timeout: run.timeout)
    }

    private func runClient(_ run: ClientRun) throws -> ClientResult {
        try startClient(run).result()
    }

    /// Connect; send `prefix` raw; wrap in TLS when asked; send `payload`; read `expect` bytes (or until the
    /// server closes); close. One JSON line on stdout.
    static let clientSource = #"""
        import json, socket, ssl, sys, time


        def classify(e):
            if isinstance(e, (socket.timeout, TimeoutError)):
                return "timeout"
            if isinstance(e, ConnectionRefusedError):
                return "refused"
            if isinstance(e, (ConnectionResetError, BrokenPipeError)):
                return "reset"
            if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
                return "eof"
            if isinstance(e, ssl.SSLError) and "EOF" in str(e):
                return "eof"
            return "error: %s" % e


        def main():
            o = json.loads(sys.argv[1])
            timeout = o.get("timeout", 10)
            r = {"received_hex": ""}
            s = socket.create_connection(("127.0.0.1", o["port"]), timeout=timeout)
            t0 = time.monotonic()
            deadline = t0 + timeout
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            r["local_port"] = s.getsockname()[1]
            buf = bytearray()
            try:
                if o.get("prefix_hex"):
                    s.sendall(bytes.fromhex(o["prefix_hex"]))
                if o.get("tls"):
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    if o.get("alpn"):
                        ctx.set_alpn_protocols(o["alpn"])
                    s = ctx.wrap_socket(s, server_hostname=o.get("server_name"))
                    r["version"] = s.version()
                    r["cipher"] = s.cipher()[0]
                    r["alpn"] = s.selected_alpn_protocol()
                if o.get("payload_hex"):
                    s.sendall(bytes.fromhex(o["payload_hex"]))
                n = o.get("expect")
                how = None
                while n is None or len(buf) < n:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        how = "timeout"
                        break
                    s.settimeout(left)
                    try:
                        chunk = s.recv(65536 if n is None else n - len(buf))
                    except (socket.timeout, TimeoutError):
                        how = "timeout"
                        break
                    except (ConnectionResetError, BrokenPipeError):
                        how = "reset"
                        break
                    except ssl.SSLError as e:
                        how = classify(e)
                        if how == "eof":
                            how = "fin"
                        break
                    if not chunk:
                        how = "fin"
                        break
                    buf += chunk
                r["how"] = how
                if n is not None and how is not None:
                    r["error"] = "expected %d bytes, got %d (%s)" % (n, len(buf), how)
            except Exception as e:
                r["error"] = classify(e)
            r["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
            r["received_hex"] = bytes(buf).hex()
            try:
                s.close()
            except Exception:
                pass
            return r


        if __name__ == "__main__":
            print(json.dumps(main()), flush=True)
        """#
}

// MARK: - Recording backend

/// A TCP server on 127.0.0.1 that records, per connection in accept order, every byte it received. Once a
/// connection's bytes start with a complete PROXY header (or cannot), it answers `ack:` followed by everything
/// after the header, and echoes what comes later; it closes on the peer's FIN.
final class RecordingBackend: @unchecked Sendable {
    private let lock = NSLock()
    private var buffers: [[UInt8]] = []
    private var closedFlags: [Bool] = []
    private var children: [Channel] = []
    private var serverChannel: Channel?
    private var stopped = false
    private(set) var port = 0

    init() throws {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { [self] channel in
                let index = self.accepted(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RecordingHandler(backend: self, index: index))
                }
            }
        let channel = try bootstrap.bind(host: "127.0.0.1", port: 0).wait()
        lock.withLock {
            serverChannel = channel
            port = channel.localAddress?.port ?? 0
        }
    }

    /// `127.0.0.1:PORT`, as written in `backends`.
    var address: String { "127.0.0.1:\(port)" }

    /// Connections accepted so far.
    var connectionCount: Int { lock.withLock { buffers.count } }

    /// Connections open now.
    var activeConnections: Int { lock.withLock { closedFlags.filter { !$0 }.count } }

    /// The bytes connection `index` received so far (empty when there is no such connection).
    func received(_ index: Int) -> [UInt8] {
        lock.withLock { index < buffers.count ? buffers[index] : [] }
    }

    /// Waits until at least `count` connections were accepted and all of them closed.
    func waitUntilClosed(count: Int, timeout: TimeInterval = 10) throws {
        try waitUntil(timeout: timeout, "\(count) backend connection(s) closed", state: { self.state }) {
            lock.withLock { buffers.count >= count && closedFlags.allSatisfy { $0 } }
        }
    }

    private var state: String {
        lock.withLock { "accepted \(buffers.count), closed \(closedFlags), bytes \(buffers.map(\.count))" }
    }

    fileprivate func accepted(_ channel: Channel) -> Int {
        lock.withLock {
            children.append(channel)
            buffers.append([])
            closedFlags.append(false)
            return buffers.count - 1
        }
    }

    fileprivate func record(_ index: Int, _ bytes: ByteBufferView) {
        lock.withLock { buffers[index].append(contentsOf: bytes) }
    }

    fileprivate func closed(_ index: Int) {
        lock.withLock { closedFlags[index] = true }
    }

    /// Stops listening and closes every connection (idempotent).
    func stop() {
        let (server, open) = lock.withLock { () -> (Channel?, [Channel]) in
            if stopped { return (nil, []) }
            stopped = true
            return (serverChannel, children)
        }
        try? server?.close().wait()
        for child in open { try? child.close().wait() }
    }

    deinit { stop() }
}

private final class RecordingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let backend: RecordingBackend
    private let index: Int
    private var pending = ByteBuffer()
    private var headerDone = false

    init(backend: RecordingBackend, index: Int) {
        self.backend = backend
        self.index = index
    }

    func channelInactive(context: ChannelHandlerContext) {
        backend.closed(index)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        backend.record(index, buffer.readableBytesView)
        if headerDone {
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            return
        }
        pending.writeBuffer(&buffer)
        switch ProxyProtocolHeader.parse(pending) {
        case .needMoreData:
            return
        case .header(_, let consumed):
            pending.moveReaderIndex(forwardBy: consumed)
        case .invalid:
            break
        }
        headerDone = true
        var reply = context.channel.allocator.buffer(capacity: pending.readableBytes + 4)
        reply.writeString("ack:")
        reply.writeBuffer(&pending)
        context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
