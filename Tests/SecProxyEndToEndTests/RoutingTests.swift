import Foundation
import SecProxyTestSupport
import XCTest

/// SNI routing (`[[listener.route]]`) and client-certificate authorization (`client_ca`, `client_auth`,
/// `allowed_clients`), seen from outside: which echo backend a client reaches, and what the connection line says
/// (SPEC §2, §3 Logs).
final class RoutingTests: ProxyTestCase {
    // MARK: - SNI routing

    /// Three echo servers: A (the listener's backends), B (`api.localhost`), C (`*.wild.localhost`).
    private struct RoutedWorld {
        var proxy: ProxyProcess
        var address: ListenerAddress
        var echoA: EchoServer
        var echoB: EchoServer
        var echoC: EchoServer
    }

    private func startRoutedWorld() throws -> RoutedWorld {
        let echoA = try echoBackend()
        let echoB = try echoBackend()
        let echoC = try echoBackend()
        var listener = tlsListener(backends: [echoA.address])
        listener.extraTOML = """
            [[listener.route]]
            sni = "api.localhost"
            backends = [\(tomlQuoted(echoB.address))]

            [[listener.route]]
            sni = "*.wild.localhost"
            backends = [\(tomlQuoted(echoC.address))]
            """
        let (proxy, address) = try startProxy(listener)
        return RoutedWorld(proxy: proxy, address: address, echoA: echoA, echoB: echoB, echoC: echoC)
    }

    /// One echo round trip with SNI `serverName` (nil: none). The server certificate only names localhost, so the
    /// client does not verify the server (no CA file): routing, not certificate selection, is under test.
    /// Returns the connection line's fields.
    private func roundTrip(
        _ world: RoutedWorld,
        serverName: String?,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws -> [String: String] {
        let text = "routed to ? via \(serverName ?? "no SNI")"
        let result = try python.transfer(
            ClientOptions(port: world.address.port, serverName: serverName),
            payload: .text(text),
            timeout: 15
        )
        XCTAssertTrue(
            result.ok,
            "\(serverName ?? "no SNI"): \(result)\n\(world.proxy.outputTail())",
            file: file,
            line: line
        )
        XCTAssertEqual(result.receivedText, text, file: file, line: line)
        let raw = try connectionLine(
            of: world.proxy,
            clientPort: try XCTUnwrap(result.localPort, file: file, line: line),
            file: file,
            line: line
        )
        assertHasAllConnectionFields(raw, file: file, line: line)
        let fields = Logfmt.parse(raw)
        XCTAssertEqual(fields["reason"], "client_closed", raw, file: file, line: line)
        return fields
    }

    /// The connection counts of A, B and C.
    private func counts(_ world: RoutedWorld) -> [Int] {
        [world.echoA.connectionCount, world.echoB.connectionCount, world.echoC.connectionCount]
    }

    func testExactRouteReachesItsBackend() throws {
        let world = try startRoutedWorld()
        let fields = try roundTrip(world, serverName: "api.localhost")
        XCTAssertEqual(fields["backend"], world.echoB.address, "\(fields)")
        XCTAssertEqual(fields["sni"], "api.localhost")
        XCTAssertEqual(counts(world), [0, 1, 0], "only B may see the connection")
    }

    func testWildcardRouteReachesItsBackend() throws {
        let world = try startRoutedWorld()
        let fields = try roundTrip(world, serverName: "x.wild.localhost")
        XCTAssertEqual(fields["backend"], world.echoC.address, "\(fields)")
        XCTAssertEqual(fields["sni"], "x.wild.localhost")
        XCTAssertEqual(counts(world), [0, 0, 1], "only C may see the connection")
    }

    func testWildcardMatchesExactlyOneLabel() throws {
        let world = try startRoutedWorld()
        let fields = try roundTrip(world, serverName: "a.b.wild.localhost")
        XCTAssertEqual(fields["backend"], world.echoA.address, "two labels must not match *.wild.localhost: \(fields)")
        XCTAssertEqual(fields["sni"], "a.b.wild.localhost")
        // The bare suffix is not covered by the wildcard either.
        let bare = try roundTrip(world, serverName: "wild.localhost")
        XCTAssertEqual(bare["backend"], world.echoA.address, "\(bare)")
        XCTAssertEqual(counts(world), [2, 0, 0])
    }

    func testUnroutedNameAndNoSNIUseTheListenerBackends() throws {
        let world = try startRoutedWorld()
        let other = try roundTrip(world, serverName: "other.localhost")
        XCTAssertEqual(other["backend"], world.echoA.address, "\(other)")
        XCTAssertEqual(other["sni"], "other.localhost")
        let none = try roundTrip(world, serverName: nil)
        XCTAssertEqual(none["backend"], world.echoA.address, "\(none)")
        XCTAssertEqual(none["sni"], "")
        XCTAssertEqual(counts(world), [2, 0, 0])
    }

    func testRoutingIsCaseInsensitive() throws {
        let world = try startRoutedWorld()
        let upper = try roundTrip(world, serverName: "API.localhost")
        XCTAssertEqual(upper["backend"], world.echoB.address, "\(upper)")
        XCTAssertEqual(upper["sni"]?.lowercased(), "api.localhost", "\(upper)")
        let wild = try roundTrip(world, serverName: "X.WILD.LocalHost")
        XCTAssertEqual(wild["backend"], world.echoC.address, "\(wild)")
        XCTAssertEqual(counts(world), [0, 1, 1])
    }

    func testEveryNameOnOneDaemon() throws {
        // All the cases against one running daemon, in a row: routing is per connection, not sticky.
        let world = try startRoutedWorld()
        let expected: [(String?, EchoServer)] = [
            ("api.localhost", world.echoB), ("x.wild.localhost", world.echoC), ("a.b.wild.localhost", world.echoA),
            ("other.localhost", world.echoA), (nil, world.echoA), ("API.localhost", world.echoB),
            ("y.wild.localhost", world.echoC),
        ]
        for (name, backend) in expected {
            let fields = try roundTrip(world, serverName: name)
            XCTAssertEqual(fields["backend"], backend.address, "\(name ?? "no SNI"): \(fields)")
        }
        XCTAssertEqual(counts(world), [3, 2, 2])
    }

    // MARK: - allowed_clients

    private static let allowed: TOMLValue = [
        "cn:billing", "dns:worker.internal", "uri:spiffe://example.org/ns/prod/sa/api",
    ]

    /// A TLS listener that requires client certificates from the test CA and allows only `allowed`.
    private func startMTLS(clientAuth: String = "require") throws -> (ProxyProcess, ListenerAddress, EchoServer) {
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            tlsListener(
                backends: [echo.address],
                tlsSettings: [
                    "client_ca": .string(ca.caCertPath), "client_auth": .string(clientAuth),
                    "allowed_clients": Self.allowed,
                ]
            )
        )
        return (proxy, address, echo)
    }

    /// A verified TLS client presenting `client` (nil: no certificate).
    private func mtlsTransfer(
        _ address: ListenerAddress,
        client: TestCA.Issued?,
        text: String,
        maxVersion: String? = nil
    ) throws -> TransferResult {
        try python.transfer(
            ClientOptions(
                port: address.port,
                serverName: "localhost",
                caFile: ca.caCertPath,
                maxVersion: maxVersion,
                certFile: client?.certPath,
                keyFile: client?.keyPath
            ),
            payload: .text(text),
            timeout: 15
        )
    }

    private func assertAllowed(
        _ client: TestCA.Issued,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws {
        let (proxy, address, echo) = try startMTLS()
        let text = "hello from \(client.commonName)"
        let result = try mtlsTransfer(address, client: client, text: text)
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())", file: file, line: line)
        XCTAssertEqual(result.receivedText, text, file: file, line: line)
        let fields = Logfmt.parse(
            try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort), file: file, line: line)
        )
        XCTAssertEqual(fields["reason"], "client_closed", "\(fields)", file: file, line: line)
        XCTAssertEqual(fields["backend"], echo.address, "\(fields)", file: file, line: line)
        XCTAssertEqual(echo.connectionCount, 1, file: file, line: line)
    }

    /// Waits for the one connection line of a refused client and checks it: `handshake_failed`, no backend,
    /// and the echo server never contacted. Returns the line's fields.
    @discardableResult
    private func assertRefused(
        _ proxy: ProxyProcess,
        _ echo: EchoServer,
        _ result: TransferResult,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws -> [String: String] {
        // The refusal may come as an alert or as a bare close: either way no byte of the echo comes back.
        XCTAssertEqual(result.bytesReceived, 0, "the client must not get an echo: \(result)", file: file, line: line)
        let logs = try proxy.waitForConnectionLogs(count: 1)
        XCTAssertEqual(logs.count, 1, "\(logs)", file: file, line: line)
        let fields = logs[0]
        XCTAssertEqual(fields["reason"], "handshake_failed", proxy.outputTail(), file: file, line: line)
        XCTAssertEqual(fields["backend"], "", "no backend may be chosen: \(fields)", file: file, line: line)
        XCTAssertEqual(fields["bytes_out"], "0", "\(fields)", file: file, line: line)
        XCTAssertEqual(echo.connectionCount, 0, "a refused client must not touch a backend", file: file, line: line)
        return fields
    }

    func testAllowedByCommonName() throws {
        try assertAllowed(try ca.clientCertificate("billing", commonName: "billing"))
    }

    func testAllowedByDNSName() throws {
        // The CN matches nothing: the DNS SAN lets it in (compared case-insensitively).
        try assertAllowed(try ca.clientCertificate("worker", commonName: "worker-17", dnsNames: ["Worker.Internal"]))
    }

    func testAllowedByURI() throws {
        try assertAllowed(
            try ca.clientCertificate(
                "spiffe",
                commonName: "api-pod",
                uris: ["spiffe://example.org/ns/prod/sa/api"]
            )
        )
    }

    func testOtherClientCertificateIsRefusedBeforeAnyBackend() throws {
        let (proxy, address, echo) = try startMTLS()
        // Near misses everywhere: another CN, a DNS SAN and a URI SAN that differ from the allowed ones, and a
        // wildcard (dns: entries have no wildcards).
        let other = try ca.clientCertificate(
            "other",
            commonName: "other",
            dnsNames: ["other.internal", "*.internal"],
            uris: ["spiffe://example.org/ns/prod/sa/api2"]
        )
        let result = try mtlsTransfer(address, client: other, text: "let me in")
        let fields = try assertRefused(proxy, echo, result)
        XCTAssertTrue(
            (fields["error"] ?? "").contains("not allowed"),
            "the line should say why: \(fields)"
        )
        // TLS 1.2 as well.
        let tls12 = try mtlsTransfer(address, client: other, text: "let me in", maxVersion: "1.2")
        XCTAssertEqual(tls12.bytesReceived, 0, "\(tls12)")
        let logs = try proxy.waitForConnectionLogs(count: 2)
        XCTAssertEqual(logs[1]["reason"], "handshake_failed", "\(logs[1])")
        XCTAssertTrue((logs[1]["error"] ?? "").contains("not allowed"), "\(logs[1])")
        XCTAssertEqual(echo.connectionCount, 0)
    }

    func testCommonNameMatchIsExact() throws {
        let (proxy, address, echo) = try startMTLS()
        // cn: equals the subject CN: a longer CN that starts with an allowed one is not a match.
        let near = try ca.clientCertificate("billing2", commonName: "billing-admin")
        let result = try mtlsTransfer(address, client: near, text: "x")
        let fields = try assertRefused(proxy, echo, result)
        XCTAssertTrue((fields["error"] ?? "").contains("not allowed"), "\(fields)")
    }

    func testNoClientCertificateIsRefusedWhenRequired() throws {
        let (proxy, address, echo) = try startMTLS(clientAuth: "require")
        let result = try mtlsTransfer(address, client: nil, text: "anonymous")
        XCTAssertFalse(result.ok, "a required certificate that is missing fails the handshake: \(result)")
        try assertRefused(proxy, echo, result)
    }

    func testNoClientCertificateIsRefusedWithOptionalAuthAndAllowList() throws {
        // client_auth = "optional" lets a client without a certificate finish the handshake, but a non-empty
        // allowed_clients still needs a certificate that matches one entry.
        let (proxy, address, echo) = try startMTLS(clientAuth: "optional")
        let result = try mtlsTransfer(address, client: nil, text: "anonymous")
        let fields = try assertRefused(proxy, echo, result)
        XCTAssertTrue((fields["error"] ?? "").contains("not allowed"), "\(fields)")
    }

    func testCertificateFromAnotherCAIsRefused() throws {
        let (proxy, address, echo) = try startMTLS()
        let foreignCA = try TestCA(directory: temporary.file("foreign-ca"), commonName: "foreign CA")
        let forged = try foreignCA.clientCertificate("forged", commonName: "billing")
        let result = try mtlsTransfer(address, client: forged, text: "forged")
        XCTAssertFalse(result.ok, "an unverifiable certificate fails the handshake: \(result)")
        try assertRefused(proxy, echo, result)
    }
}
