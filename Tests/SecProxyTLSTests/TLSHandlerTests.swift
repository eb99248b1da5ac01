import Foundation
import NIOCore
import NIOPosix
import SecProxyTLS
import XCTest

/// `TLSHandler` on real sockets: our server handler against our client handler.
final class TLSHandlerTests: TLSTestCase {
    // MARK: - Helpers

    func serverConfiguration() -> TLSServerConfiguration {
        TLSServerConfiguration(certificateChainFile: self.pki.serverChain, privateKeyFile: self.pki.serverKey)
    }

    func startServer(_ configuration: TLSServerConfiguration, behavior: ServerBehavior = .echo) throws -> TestTLSServer
    {
        let server = try TestTLSServer(
            group: self.group,
            context: TLSServerContext(configuration: configuration),
            behavior: behavior
        )
        self.servers.append(server)
        return server
    }

    func clientConfiguration(verify: Bool = true) -> TLSClientConfiguration {
        var configuration = TLSClientConfiguration()
        if verify {
            configuration.trustRootsFile = self.pki.caFile
        }
        return configuration
    }

    func connect(
        _ server: TestTLSServer,
        _ context: TLSClientContext?,
        serverName: String? = "localhost"
    ) throws -> TestClient {
        let client = try TestClient(group: self.group, port: server.port, context: context, serverName: serverName)
        self.clients.append(client)
        return client
    }

    func connect(
        _ server: TestTLSServer,
        _ configuration: TLSClientConfiguration,
        serverName: String? = "localhost"
    ) throws -> TestClient {
        try self.connect(server, TLSClientContext(configuration: configuration), serverName: serverName)
    }

    /// Sends `text`, waits for its echo.
    func roundTrip(_ client: TestClient, _ text: String) throws {
        let before = client.log.receivedCount
        _ = try awaitFuture(client.write(text))
        try waitUntil("echo of \(text)") { client.log.receivedCount >= before + text.utf8.count }
        XCTAssertEqual(String(decoding: client.log.received.suffix(text.utf8.count), as: UTF8.self), text)
    }

    // MARK: - Handshake facts

    func testHandshakeReportsVersionCipherALPNAndSNI() throws {
        var configuration = self.serverConfiguration()
        configuration.alpn = ["h2", "http/1.1"]
        let server = try self.startServer(configuration)
        var clientConfiguration = self.clientConfiguration()
        clientConfiguration.alpn = ["http/1.1", "h2"]  // server preference wins
        let client = try self.connect(server, clientConfiguration, serverName: "www.example.test")

        let info = try client.waitForHandshake()
        XCTAssertEqual(info.version, "TLSv1.3")
        XCTAssertTrue(info.cipher.hasPrefix("TLS_"), info.cipher)
        XCTAssertEqual(info.alpn, "h2")
        XCTAssertFalse(info.resumed)
        XCTAssertEqual(info.peerCertificate?.commonName, "localhost")

        try self.roundTrip(client, "hello")
        let serverInfo = try XCTUnwrap(server.log.handshakes.first)
        XCTAssertEqual(serverInfo.serverName, "www.example.test")
        XCTAssertEqual(serverInfo.alpn, "h2")
        XCTAssertEqual(serverInfo.version, "TLSv1.3")
        XCTAssertEqual(serverInfo.cipher, info.cipher)
        XCTAssertNil(serverInfo.peerCertificate)
    }

    func testTLS12WithDefaultCiphersUsesECDHEAndAEAD() throws {
        let server = try self.startServer(self.serverConfiguration())
        var clientConfiguration = self.clientConfiguration()
        clientConfiguration.maximumVersion = .tls12
        let client = try self.connect(server, clientConfiguration)
        let info = try client.waitForHandshake()
        XCTAssertEqual(info.version, "TLSv1.2")
        XCTAssertTrue(info.cipher.hasPrefix("ECDHE-ECDSA-"), info.cipher)
        XCTAssertTrue(info.cipher.contains("GCM") || info.cipher.contains("CHACHA20"), info.cipher)
        try self.roundTrip(client, "over TLS 1.2")
    }

    func testRSACertificateAndConfiguredCipherSuite() throws {
        var configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.rsaCert,
            privateKeyFile: self.pki.rsaKey
        )
        configuration.cipherSuites = "TLS_CHACHA20_POLY1305_SHA256"
        configuration.cipherList = "ECDHE-RSA-AES256-GCM-SHA384"
        let server = try self.startServer(configuration)

        let tls13 = try self.connect(server, self.clientConfiguration(), serverName: "rsa.example.test")
        XCTAssertEqual(try tls13.waitForHandshake().cipher, "TLS_CHACHA20_POLY1305_SHA256")

        var tls12Configuration = self.clientConfiguration()
        tls12Configuration.maximumVersion = .tls12
        let tls12 = try self.connect(server, tls12Configuration, serverName: "rsa.example.test")
        XCTAssertEqual(try tls12.waitForHandshake().cipher, "ECDHE-RSA-AES256-GCM-SHA384")
        try self.roundTrip(tls12, "rsa")
    }

    func testALPNWithoutOverlapContinuesWithoutALPN() throws {
        var configuration = self.serverConfiguration()
        configuration.alpn = ["h2"]
        let server = try self.startServer(configuration)
        var clientConfiguration = self.clientConfiguration()
        clientConfiguration.alpn = ["imap"]
        let client = try self.connect(server, clientConfiguration)
        XCTAssertNil(try client.waitForHandshake().alpn)
        try self.roundTrip(client, "no alpn")
        XCTAssertNil(server.log.handshakes.first?.alpn)
    }

    // MARK: - SNI

    func testSNISelectsCertificateExactBeatsWildcard() throws {
        var configuration = self.serverConfiguration()
        configuration.sniCertificates = [
            TLSSNICertificate(chainFile: self.pki.wildcardCert, keyFile: self.pki.wildcardKey),
            TLSSNICertificate(chainFile: self.pki.apiCert, keyFile: self.pki.apiKey),
            TLSSNICertificate(chainFile: self.pki.exactCert, keyFile: self.pki.exactKey),
            TLSSNICertificate(chainFile: self.pki.rsaCert, keyFile: self.pki.rsaKey, names: ["Legacy.Example.NET"]),
        ]
        let server = try self.startServer(configuration)
        let expectations: [(String?, String)] = [
            ("api.example.org", "api.example.org"),
            ("API.Example.ORG", "api.example.org"),
            ("one.wild.example.org", "*.wild.example.org"),
            ("exact.wild.example.org", "exact.wild.example.org"),
            ("legacy.example.net", "rsa.example.test"),
            ("localhost", "localhost"),
            ("unknown.example.com", "localhost"),  // not strict: default certificate
            (nil, "localhost"),
        ]
        // Verification is off: we look at which certificate came back, not whether it fits the name.
        let clientContext = try TLSClientContext(configuration: self.clientConfiguration(verify: false))
        for (name, expected) in expectations {
            let client = try self.connect(server, clientContext, serverName: name)
            let info = try client.waitForHandshake()
            XCTAssertEqual(info.peerCertificate?.dnsNames.first, expected, "SNI \(name ?? "none")")
            client.close()
        }
        // "a.b.wild.example.org" is two labels below the wildcard: default certificate.
        let deep = try self.connect(server, clientContext, serverName: "a.b.wild.example.org")
        XCTAssertEqual(try deep.waitForHandshake().peerCertificate?.dnsNames.first, "localhost")
    }

    func testStrictSNIRejectsUnknownAndMissingNames() throws {
        var configuration = self.serverConfiguration()
        configuration.strictSNI = true
        configuration.sniCertificates = [TLSSNICertificate(chainFile: self.pki.apiCert, keyFile: self.pki.apiKey)]
        let server = try self.startServer(configuration)
        let clientContext = try TLSClientContext(configuration: self.clientConfiguration(verify: false))

        let unknown = try self.connect(server, clientContext, serverName: "unknown.example.com")
        XCTAssertTrue(try unknown.waitForError().reason.contains("unrecognized name"))
        try unknown.waitForClose()

        let missing = try self.connect(server, clientContext, serverName: nil)
        XCTAssertTrue(try missing.waitForError().reason.contains("unrecognized name"))

        try waitUntil("two server errors") { server.log.tlsErrors.count == 2 }
        XCTAssertEqual(server.log.tlsErrors.map(\.reason), ["unrecognized name", "unrecognized name"])
        XCTAssertTrue(server.log.handshakes.isEmpty)

        // Known names still work: the default certificate's SANs and the SNI entry's.
        for name in ["localhost", "api.example.org"] {
            let known = try self.connect(server, clientContext, serverName: name)
            XCTAssertEqual(try known.waitForHandshake().peerCertificate?.dnsNames.first, name)
        }
    }

    // MARK: - Data

    func testEchoesFourMiBInBothDirectionsAtOnce() throws {
        let server = try self.startServer(self.serverConfiguration())
        let client = try self.connect(server, self.clientConfiguration())
        _ = try client.waitForHandshake()
        let payload = randomBytes(4 * 1024 * 1024)
        // Several writes, all in flight at once, while the echo streams back.
        var writes: [EventLoopFuture<Void>] = []
        for chunk in stride(from: 0, to: payload.count, by: 1024 * 1024) {
            writes.append(client.channel.write(ByteBuffer(bytes: payload[chunk..<(chunk + 1024 * 1024)])))
        }
        client.channel.flush()
        for write in writes {
            _ = try awaitFuture(write, timeout: 30)
        }
        try waitUntil("4 MiB echoed", timeout: 30) { client.log.receivedCount >= payload.count }
        XCTAssertEqual(client.log.receivedCount, payload.count)
        XCTAssertTrue(client.log.received.elementsEqual(payload), "echoed bytes differ")
        XCTAssertEqual(server.log.receivedCount, payload.count)
    }

    func testWritesBeforeHandshakeCompletionAreQueuedInOrder() throws {
        let server = try self.startServer(self.serverConfiguration())
        let client = try self.connect(server, self.clientConfiguration())
        // Right after connect: the ClientHello is out, the server's answer is not in yet.
        let first = client.channel.write(ByteBuffer(string: "first "))
        let second = client.channel.writeAndFlush(ByteBuffer(string: "second"))
        _ = try awaitFuture(first)
        _ = try awaitFuture(second)
        try waitUntil("queued writes echoed") { client.log.receivedCount >= 12 }
        XCTAssertEqual(String(decoding: client.log.received, as: UTF8.self), "first second")
        XCTAssertEqual(client.log.handshakes.count, 1)
    }

    func testHalfCloseLetsTheServerAnswerAfterClientFinished() throws {
        let server = try self.startServer(self.serverConfiguration())
        let client = try self.connect(server, self.clientConfiguration())
        _ = try client.waitForHandshake()
        let payload = randomBytes(256 * 1024)
        let written = client.channel.write(ByteBuffer(bytes: payload))
        // Output close right behind the data: close_notify, then FIN.
        let outputClosed = client.channel.close(mode: .output)
        client.channel.flush()
        _ = try awaitFuture(written)
        _ = try awaitFuture(outputClosed)

        // The server saw the input end once, still echoed everything, then closed its output;
        // the client read it all and saw the server's close_notify as its input closing.
        try waitUntil("client input closed", timeout: 20) { client.log.inputClosedCount > 0 }
        XCTAssertEqual(client.log.receivedCount, payload.count)
        XCTAssertTrue(client.log.received.elementsEqual(payload))
        XCTAssertEqual(server.log.inputClosedCount, 1)
        XCTAssertTrue(server.log.tlsErrors.isEmpty, "\(server.log.tlsErrors)")
        XCTAssertTrue(client.log.tlsErrors.isEmpty, "\(client.log.tlsErrors)")
        XCTAssertEqual(client.log.inputClosedCount, 1)
        // Writing after the output close fails.
        XCTAssertThrowsError(try awaitFuture(client.write("late")))
    }

    func testTCPEOFAfterHandshakeIsAHalfCloseToo() throws {
        let server = try self.startServer(self.serverConfiguration())
        let client = try self.connect(server, self.clientConfiguration())
        try self.roundTrip(client, "before the FIN")
        // A FIN without close_notify: close the socket's output from below the client's TLS handler.
        let channel = client.channel
        try channel.eventLoop.submit {
            let tlsContext = try channel.pipeline.syncOperations.context(handlerType: TLSHandler.self)
            tlsContext.close(mode: .output, promise: nil)
        }.wait()
        // The server sees its input end once (no error), and its echo side closes in turn.
        try waitUntil("server input closed") { server.log.inputClosedCount == 1 }
        try waitUntil("client input closed") { client.log.inputClosedCount == 1 }
        XCTAssertTrue(server.log.tlsErrors.isEmpty, "\(server.log.tlsErrors)")
        XCTAssertTrue(client.log.tlsErrors.isEmpty, "\(client.log.tlsErrors)")
    }

    func testHandshakeProgressesWithAutoReadOff() throws {
        let server = try TestTLSServer(
            group: self.group,
            context: TLSServerContext(configuration: self.serverConfiguration()),
            autoRead: false
        )
        self.servers.append(server)
        let client = try self.connect(server, self.clientConfiguration())
        _ = try client.waitForHandshake()
        try self.roundTrip(client, "one")
        try self.roundTrip(client, "two")
        XCTAssertEqual(server.log.handshakes.count, 1)
    }

    func testGracefulCloseSendsQueuedDataAndCloseNotify() throws {
        let server = try self.startServer(self.serverConfiguration(), behavior: .sendAndClose("goodbye"))
        let client = try self.connect(server, self.clientConfiguration())
        try waitUntil("close_notify from server") { client.log.inputClosedCount > 0 }
        XCTAssertEqual(String(decoding: client.log.received, as: UTF8.self), "goodbye")
        XCTAssertTrue(client.log.tlsErrors.isEmpty, "\(client.log.tlsErrors)")
        try waitUntil("server channel closed") { server.log.closedCount > 0 }
        XCTAssertTrue(server.log.tlsErrors.isEmpty, "\(server.log.tlsErrors)")
    }

    // MARK: - Resumption

    func testResumptionTLS13() throws {
        try self.checkResumption(maximumVersion: .tls13, serverTickets: true)
    }

    func testResumptionTLS12WithTickets() throws {
        try self.checkResumption(maximumVersion: .tls12, serverTickets: true)
    }

    func testResumptionTLS12FromSessionCacheWithoutTickets() throws {
        try self.checkResumption(maximumVersion: .tls12, serverTickets: false)
    }

    private func checkResumption(maximumVersion: TLSProtocolVersion, serverTickets: Bool) throws {
        var configuration = self.serverConfiguration()
        configuration.sessionTickets = serverTickets
        let server = try self.startServer(configuration)
        var clientConfiguration = self.clientConfiguration()
        clientConfiguration.maximumVersion = maximumVersion
        let context = try TLSClientContext(configuration: clientConfiguration)

        let first = try self.connect(server, context)
        XCTAssertFalse(try first.waitForHandshake().resumed)
        try self.roundTrip(first, "first")  // TLS 1.3 tickets arrive after the handshake
        first.close()

        let second = try self.connect(server, context)
        XCTAssertTrue(try second.waitForHandshake().resumed)
        try self.roundTrip(second, "second")
        try waitUntil("server handshakes") { server.log.handshakes.count == 2 }
        XCTAssertEqual(server.log.handshakes.map(\.resumed), [false, true])

        // Another server name has no session.
        let other = try self.connect(server, context, serverName: "www.example.test")
        XCTAssertFalse(try other.waitForHandshake().resumed)
    }

    // MARK: - Client certificates

    func mutualTLSServer(optional: Bool, crl: Bool = false) throws -> TestTLSServer {
        var configuration = self.serverConfiguration()
        configuration.clientCAFile = self.pki.caFile
        configuration.clientCertificateOptional = optional
        configuration.clientCRLFile = crl ? self.pki.crlFile : nil
        return try self.startServer(configuration)
    }

    func clientConfiguration(certificate: String, key: String) -> TLSClientConfiguration {
        var configuration = self.clientConfiguration()
        configuration.certificateChainFile = certificate
        configuration.privateKeyFile = key
        return configuration
    }

    func testMutualTLSRequiredAcceptsAClientCertificate() throws {
        let server = try self.mutualTLSServer(optional: false)
        let client = try self.connect(
            server,
            self.clientConfiguration(certificate: self.pki.clientCert, key: self.pki.clientKey)
        )
        _ = try client.waitForHandshake()
        try self.roundTrip(client, "authenticated")
        let peer = try XCTUnwrap(server.log.handshakes.first?.peerCertificate)
        XCTAssertEqual(peer.commonName, "billing")
        XCTAssertEqual(peer.dnsNames, ["worker.internal"])
        XCTAssertEqual(peer.uris, ["spiffe://example.org/ns/prod/sa/api"])
    }

    func testMutualTLSRequiredRefusesAClientWithoutCertificate() throws {
        let server = try self.mutualTLSServer(optional: false)
        let client = try self.connect(server, self.clientConfiguration())
        // TLS 1.3: the client may finish its side before the server's verdict arrives as an alert.
        try waitUntil("server error") { !server.log.tlsErrors.isEmpty }
        XCTAssertEqual(server.log.tlsErrors.map(\.reason), ["peer did not return a certificate"])
        XCTAssertTrue(server.log.handshakes.isEmpty)
        XCTAssertTrue(try client.waitForError().reason.contains("certificate required"))
        try client.waitForClose()
    }

    func testMutualTLSOptionalAllowsNoCertificateButVerifiesOne() throws {
        let server = try self.mutualTLSServer(optional: true)
        let anonymous = try self.connect(server, self.clientConfiguration())
        _ = try anonymous.waitForHandshake()
        try self.roundTrip(anonymous, "anonymous")
        XCTAssertNil(server.log.handshakes.first?.peerCertificate)

        let untrusted = try self.connect(
            server,
            self.clientConfiguration(certificate: self.pki.untrustedClientCert, key: self.pki.untrustedClientKey)
        )
        try waitUntil("server error") { !server.log.tlsErrors.isEmpty }
        XCTAssertEqual(server.log.tlsErrors.first?.reason, "certificate verify failed")
        XCTAssertTrue(
            server.log.tlsErrors.first?.description.contains("unable to get local issuer certificate") ?? false
        )
        try untrusted.waitForClose()
    }

    func testRevokedClientCertificateIsRefused() throws {
        let server = try self.mutualTLSServer(optional: false, crl: true)
        let good = try self.connect(
            server,
            self.clientConfiguration(certificate: self.pki.clientCert, key: self.pki.clientKey)
        )
        try self.roundTrip(good, "still good")

        _ = try self.connect(
            server,
            self.clientConfiguration(certificate: self.pki.revokedClientCert, key: self.pki.revokedClientKey)
        )
        try waitUntil("server error") { !server.log.tlsErrors.isEmpty }
        XCTAssertEqual(server.log.tlsErrors.first?.reason, "certificate verify failed")
        XCTAssertTrue(
            server.log.tlsErrors.first?.description.contains("certificate revoked") ?? false,
            server.log.tlsErrors.first?.description ?? ""
        )
    }

    // MARK: - Server verification by the client

    func testClientVerifiesTheServerName() throws {
        let server = try self.startServer(self.serverConfiguration())
        let good = try self.connect(server, self.clientConfiguration(), serverName: "www.example.test")
        _ = try good.waitForHandshake()

        let wrong = try self.connect(server, self.clientConfiguration(), serverName: "wrong.example.test")
        let error = try wrong.waitForError()
        XCTAssertEqual(error.reason, "certificate verify failed")
        XCTAssertTrue(error.description.contains("hostname mismatch"), error.description)
        XCTAssertTrue(wrong.log.handshakes.isEmpty)

        // An IP address is verified against IP SANs and sent without SNI.
        let byAddress = try self.connect(server, self.clientConfiguration(), serverName: "127.0.0.1")
        _ = try byAddress.waitForHandshake()
        try waitUntil("three server handshakes") { server.log.handshakes.count == 2 }
        XCTAssertEqual(server.log.handshakes.last?.serverName, nil)
    }

    func testClientRefusesAnExpiredServerCertificate() throws {
        let configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.expiredCert,
            privateKeyFile: self.pki.expiredKey
        )
        let server = try self.startServer(configuration)
        let client = try self.connect(server, self.clientConfiguration(), serverName: "expired.example.test")
        let error = try client.waitForError()
        XCTAssertEqual(error.reason, "certificate verify failed")
        XCTAssertTrue(error.description.contains("certificate has expired"), error.description)
    }

    // MARK: - Failures

    func testGarbageBytesFireOneErrorAndClose() throws {
        let server = try self.startServer(self.serverConfiguration())
        let client = try self.connect(server, nil)
        _ = try awaitFuture(client.write("GARBAGE\u{1}\u{2}\u{3} this is not a TLS record at all\r\n\r\n"))
        try client.waitForEOF()
        try waitUntil("server closed") { server.log.closedCount == 1 }
        XCTAssertEqual(server.log.tlsErrors.count, 1)
        XCTAssertFalse(server.log.tlsErrors[0].reason.isEmpty)
        XCTAssertEqual(server.log.tlsErrors[0].reason, "wrong version number")
        XCTAssertTrue(server.log.handshakes.isEmpty)
    }

    func testMalformedClientHelloGetsAnAlertBeforeTheClose() throws {
        let server = try self.startServer(self.serverConfiguration())
        let client = try self.connect(server, nil)
        // A handshake record holding a ClientHello whose body is one garbage byte.
        _ = try awaitFuture(
            client.channel.writeAndFlush(
                ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0xFF])
            )
        )
        try client.waitForEOF()
        try waitUntil("server error") { server.log.tlsErrors.count == 1 }
        XCTAssertFalse(server.log.tlsErrors[0].reason.isEmpty)
        // The fatal alert went out before the close: an alert record (content type 21), level fatal (2).
        let received = [UInt8](client.log.received)
        XCTAssertEqual(received.count, 7, "\(received)")
        XCTAssertEqual(received.first, 0x15)
        XCTAssertEqual(received.dropFirst(5).first, 2)
    }

    func testHTTPRequestOnTLSPortIsAnError() throws {
        let server = try self.startServer(self.serverConfiguration())
        let client = try self.connect(server, nil)
        _ = try awaitFuture(client.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        try client.waitForEOF()
        try waitUntil("server error") { server.log.tlsErrors.count == 1 }
        XCTAssertEqual(server.log.tlsErrors[0].reason, "http request")
    }

    func testEOFDuringHandshakeIsHandshakeEOF() throws {
        let server = try self.startServer(self.serverConfiguration())
        // A partial ClientHello record header, then FIN.
        let client = try self.connect(server, nil)
        _ = try awaitFuture(client.channel.writeAndFlush(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x01])))
        _ = try awaitFuture(client.channel.close(mode: .output))
        try waitUntil("server error") { server.log.tlsErrors.count == 1 }
        XCTAssertEqual(server.log.tlsErrors[0].reason, "handshake eof")
        try waitUntil("server closed") { server.log.closedCount == 1 }

        // Connect and close without a byte: also a handshake that ended early.
        let silent = try self.connect(server, nil)
        silent.close()
        try waitUntil("second server error") { server.log.tlsErrors.count == 2 }
        XCTAssertEqual(server.log.tlsErrors[1].reason, "handshake eof")
    }

    func testVersionMismatchFailsOnBothSides() throws {
        var configuration = self.serverConfiguration()
        configuration.minimumVersion = .tls13
        let server = try self.startServer(configuration)
        var clientConfiguration = self.clientConfiguration()
        clientConfiguration.maximumVersion = .tls12
        let client = try self.connect(server, clientConfiguration)
        let clientError = try client.waitForError()
        XCTAssertTrue(clientError.reason.contains("protocol version"), clientError.reason)
        try waitUntil("server error") { server.log.tlsErrors.count == 1 }
        XCTAssertEqual(server.log.tlsErrors[0].reason, "unsupported protocol")
        try client.waitForClose()
        XCTAssertEqual(client.log.tlsErrors.count, 1)
    }

    func testLocalCloseDuringHandshakeIsNotAnError() throws {
        let server = try self.startServer(self.serverConfiguration())
        let client = try self.connect(server, self.clientConfiguration())
        client.close()  // the handshake is still under way on the client side
        try client.waitForClose()
        XCTAssertTrue(client.log.tlsErrors.isEmpty, "\(client.log.tlsErrors)")
    }
}
