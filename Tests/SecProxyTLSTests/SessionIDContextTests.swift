import Foundation
import NIOCore
import NIOPosix
import XCTest

@testable import SecProxyTLS

/// The session ID context (issue 7 §1): a digest of who may connect, the same for the same settings
/// and different for any difference; sessions never resume across it, on TLS 1.2 tickets and session
/// cache and TLS 1.3 PSKs, SNI contexts included; the peer certificate of a resumed session is
/// reported; a resumed session without a required client certificate is refused even when the
/// contexts match; random ticket keys survive a rebuild from the previous context.
final class SessionIDContextTests: TLSTestCase {
    // MARK: - Helpers

    static let versions: [TLSProtocolVersion] = [.tls12, .tls13]

    func inputs() throws -> TLSSessionIDContext.Inputs {
        TLSSessionIDContext.Inputs(
            listenerName: "mtls",
            defaultCertificateDER: try TLSCertificate.loadChain(file: self.pki.serverCert)[0].derBytes(),
            clientCA: Array(try Data(contentsOf: URL(fileURLWithPath: self.pki.caFile))),
            clientCRL: Array(try Data(contentsOf: URL(fileURLWithPath: self.pki.crlFile))),
            clientAuthentication: .require,
            allowedClients: ["cn:billing", "dns:worker.internal"]
        )
    }

    /// The settings of a listener "open" (no client certificates).
    func openConfiguration(_ name: String = "open") -> TLSServerConfiguration {
        var configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.serverChain,
            privateKeyFile: self.pki.serverKey
        )
        configuration.listenerName = name
        configuration.sniCertificates = [TLSSNICertificate(chainFile: self.pki.apiCert, keyFile: self.pki.apiKey)]
        return configuration
    }

    /// The settings of a listener "mtls": client certificates required, CRL checked.
    func mtlsConfiguration(_ name: String = "mtls") -> TLSServerConfiguration {
        var configuration = self.openConfiguration(name)
        configuration.clientCAFile = self.pki.caFile
        configuration.clientCRLFile = self.pki.crlFile
        return configuration
    }

    func context(
        _ configuration: TLSServerConfiguration,
        keys: [TLSTicketKey],
        sessionIDContext: TLSSessionIDContext? = nil
    ) throws -> TLSServerContext {
        var configuration = configuration
        configuration.ticketKeys = keys
        return try TLSServerContext(configuration: configuration, previous: nil, sessionIDContext: sessionIDContext)
    }

    func startServer(_ context: TLSServerContext) throws -> TestTLSServer {
        let server = try TestTLSServer(group: self.group, context: context)
        self.servers.append(server)
        return server
    }

    /// - Parameters:
    ///   - certificate: present the client certificate (CN billing).
    ///   - revoked: present the certificate that crl.pem revokes instead.
    func clientContext(
        _ version: TLSProtocolVersion,
        certificate: Bool = false,
        revoked: Bool = false
    ) throws -> TLSClientContext {
        var configuration = TLSClientConfiguration()
        configuration.trustRootsFile = self.pki.caFile
        configuration.minimumVersion = version
        configuration.maximumVersion = version
        if certificate {
            configuration.certificateChainFile = self.pki.clientCert
            configuration.privateKeyFile = self.pki.clientKey
        }
        if revoked {
            configuration.certificateChainFile = self.pki.revokedClientCert
            configuration.privateKeyFile = self.pki.revokedClientKey
        }
        return try TLSClientContext(configuration: configuration)
    }

    enum Outcome: Equatable {
        /// The handshake completed and a line was echoed; whether it was resumed.
        case connected(resumed: Bool)
        /// The client saw the handshake fail or the connection end before the echo.
        case refused
    }

    /// Connects, round-trips a line (TLS 1.3 tickets arrive after the handshake; a TLS 1.3 client
    /// sees a refused client certificate only then), closes.
    @discardableResult
    func connect(
        _ server: TestTLSServer,
        _ client: TLSClientContext,
        serverName: String = "localhost"
    ) throws -> Outcome {
        let connection = try TestClient(group: self.group, port: server.port, context: client, serverName: serverName)
        self.clients.append(connection)
        try waitUntil("client handshake") {
            !connection.log.handshakes.isEmpty || !connection.log.tlsErrors.isEmpty || connection.log.closedCount > 0
        }
        guard let info = connection.log.handshakes.first else { return .refused }
        _ = try? awaitFuture(connection.write("ping"))
        try waitUntil("echo or close") { connection.log.receivedCount >= 4 || connection.log.closedCount > 0 }
        let echoed = connection.log.receivedCount >= 4
        connection.close()
        return echoed ? .connected(resumed: info.resumed) : .refused
    }

    // MARK: - The digest

    func testSameInputsGiveTheSameContextAndEachInputChangesIt() throws {
        let base = try self.inputs()
        let context = try TLSSessionIDContext(base)
        XCTAssertEqual(context.bytes.count, 32, "SSL_MAX_SID_CTX_LENGTH")
        XCTAssertEqual(try TLSSessionIDContext(base), context, "deterministic: a fleet agrees on it")
        var reordered = base
        reordered.allowedClients.reverse()
        XCTAssertEqual(try TLSSessionIDContext(reordered), context, "the order of allowed_clients does not matter")

        var variants: [(String, TLSSessionIDContext.Inputs)] = []
        func variant(_ what: String, _ change: (inout TLSSessionIDContext.Inputs) -> Void) {
            var changed = base
            change(&changed)
            variants.append((what, changed))
        }
        variant("listener name") { $0.listenerName = "mtls2" }
        variant("default certificate") { $0.defaultCertificateDER[$0.defaultCertificateDER.count - 1] ^= 1 }
        variant("client CA contents") { $0.clientCA!.append(0x0A) }
        variant("no client CA") { $0.clientCA = nil }
        variant("empty client CA") { $0.clientCA = [] }
        variant("client CRL contents") { $0.clientCRL!.append(0x0A) }
        variant("no client CRL") { $0.clientCRL = nil }
        variant("client_auth optional") { $0.clientAuthentication = .optional }
        variant("client_auth none") { $0.clientAuthentication = .none }
        variant("an allowed client more") { $0.allowedClients.append("uri:spiffe://example.org/x") }
        variant("an allowed client less") { $0.allowedClients.removeLast() }
        variant("an allowed client changed") { $0.allowedClients[0] = "cn:billinG" }
        variant("no allowed clients") { $0.allowedClients = [] }
        // Field boundaries count: moving bytes from one field to the next is a different input.
        variant("bytes moved between fields") {
            $0.clientCRL = Array($0.clientCA!.suffix(1)) + $0.clientCRL!
            $0.clientCA!.removeLast()
        }
        variant("allowed clients joined") { $0.allowedClients = [$0.allowedClients.joined()] }

        var seen: [TLSSessionIDContext: String] = [context: "base"]
        for (what, inputs) in variants {
            let digest = try TLSSessionIDContext(inputs)
            XCTAssertNil(seen[digest], "\(what) gives the same context as \(seen[digest] ?? "")")
            seen[digest] = what
        }
    }

    func testContextsBuiltFromTheSameSettingsShareTheirSessionIDContext() throws {
        let one = try self.context(self.mtlsConfiguration(), keys: [])
        let two = try self.context(self.mtlsConfiguration(), keys: [])
        XCTAssertEqual(one.sessionIDContext, two.sessionIDContext)
        XCTAssertNotEqual(one.sessionIDContext, try self.context(self.openConfiguration("mtls"), keys: []).sessionIDContext)
        XCTAssertNotEqual(one.sessionIDContext, try self.context(self.mtlsConfiguration("other"), keys: []).sessionIDContext)
        var optional = self.mtlsConfiguration()
        optional.clientCertificateOptional = true
        XCTAssertNotEqual(one.sessionIDContext, try self.context(optional, keys: []).sessionIDContext)
        var allowed = self.mtlsConfiguration()
        allowed.allowedClients = ["cn:billing"]
        XCTAssertNotEqual(one.sessionIDContext, try self.context(allowed, keys: []).sessionIDContext)
        var noCRL = self.mtlsConfiguration()
        noCRL.clientCRLFile = nil
        XCTAssertNotEqual(one.sessionIDContext, try self.context(noCRL, keys: []).sessionIDContext)
        var otherCertificate = self.mtlsConfiguration()
        otherCertificate.certificateChainFile = self.pki.rsaCert
        otherCertificate.privateKeyFile = self.pki.rsaKey
        XCTAssertNotEqual(one.sessionIDContext, try self.context(otherCertificate, keys: []).sessionIDContext)
        // Settings that do not decide who may connect leave it alone.
        var alpn = self.mtlsConfiguration()
        alpn.alpn = ["h2"]
        alpn.sniCertificates = []
        XCTAssertEqual(one.sessionIDContext, try self.context(alpn, keys: []).sessionIDContext)
    }

    // MARK: - Resumption across listeners (the reproduction of issue 7 §1, in process)

    func testASessionOfAListenerWithoutClientCertificatesDoesNotResumeWhereTheyAreRequired() throws {
        let keys = [try TLSTicketKey.random()]
        for version in Self.versions {
            for serverName in ["localhost", "api.example.org"] {
                let open = try self.startServer(self.context(self.openConfiguration(), keys: keys))
                let openTwin = try self.startServer(self.context(self.openConfiguration(), keys: keys))
                let mtls = try self.startServer(self.context(self.mtlsConfiguration(), keys: keys))
                let client = try self.clientContext(version)
                let what = "\(version), SNI \(serverName)"
                XCTAssertEqual(try self.connect(open, client, serverName: serverName), .connected(resumed: false), what)
                // Control: the ticket is good, a listener with the same settings resumes it.
                XCTAssertEqual(try self.connect(openTwin, client, serverName: serverName), .connected(resumed: true), what)
                XCTAssertEqual(try self.connect(mtls, client, serverName: serverName), .refused, what)
                try waitUntil("the mtls server's failure") { !mtls.log.tlsErrors.isEmpty }
                XCTAssertEqual(mtls.log.handshakes, [], "\(what): no handshake completed on mtls")
                // The session was not taken: a full handshake asked for the certificate the client lacks
                // (not the defence in depth behind the session ID context, which has its own test).
                XCTAssertEqual(
                    mtls.log.tlsErrors.map(\.reason),
                    ["peer did not return a certificate"],
                    "\(what): \(mtls.log.tlsErrors.map(\.description))"
                )
            }
        }
    }

    // MARK: - Peer certificate of resumed sessions

    func testAResumedSessionReportsTheClientCertificateItWasEstablishedWith() throws {
        for version in Self.versions {
            for tickets in [true, false] {
                var configuration = self.mtlsConfiguration()
                configuration.sessionTickets = tickets
                let server = try self.startServer(self.context(configuration, keys: []))
                let client = try self.clientContext(version, certificate: true)
                let what = "\(version), tickets \(tickets)"
                XCTAssertEqual(try self.connect(server, client), .connected(resumed: false), what)
                XCTAssertEqual(try self.connect(server, client), .connected(resumed: true), what)
                let handshakes = server.log.handshakes
                XCTAssertEqual(handshakes.map(\.resumed), [false, true], what)
                for info in handshakes {
                    XCTAssertEqual(info.peerCertificate?.commonName, "billing", "\(what): \(info)")
                    XCTAssertEqual(info.peerCertificate?.dnsNames, ["worker.internal"], "\(what)")
                    XCTAssertEqual(info.peerCertificate?.uris, ["spiffe://example.org/ns/prod/sa/api"], "\(what)")
                }
            }
        }
    }

    // MARK: - Defence in depth

    func testARequiredClientCertificateIsEnforcedOnResumptionEvenWhenTheContextsMatch() throws {
        // Forced equal session ID contexts: the situation the digest prevents, to test what stands behind it.
        let shared = try TLSSessionIDContext(self.inputs())
        let keys = [try TLSTicketKey.random()]
        for version in Self.versions {
            let open = try self.startServer(self.context(self.openConfiguration(), keys: keys, sessionIDContext: shared))
            let mtls = try self.startServer(self.context(self.mtlsConfiguration(), keys: keys, sessionIDContext: shared))
            let client = try self.clientContext(version)
            XCTAssertEqual(try self.connect(open, client), .connected(resumed: false), "\(version)")
            XCTAssertEqual(try self.connect(mtls, client), .refused, "\(version)")
            try waitUntil("the mtls server's failure") { !mtls.log.tlsErrors.isEmpty }
            XCTAssertEqual(mtls.log.tlsErrors.map(\.reason), ["resumed session without client certificate"], "\(version)")
            XCTAssertEqual(mtls.log.handshakes, [], "\(version)")
            XCTAssertTrue(
                self.clients.last!.log.handshakes.isEmpty,
                "\(version): refused before the server's Finished, the client never completes"
            )

            // A session with a client certificate passes the same check.
            let withCertificate = try self.clientContext(version, certificate: true)
            XCTAssertEqual(try self.connect(mtls, withCertificate), .connected(resumed: false), "\(version)")
            XCTAssertEqual(try self.connect(mtls, withCertificate), .connected(resumed: true), "\(version)")
        }
    }

    // MARK: - Random ticket keys across a rebuild

    func testRandomTicketKeysAreKeptFromThePreviousContext() throws {
        for version in Self.versions {
            let first = try TLSServerContext(configuration: self.openConfiguration())
            let firstServer = try self.startServer(first)
            let client = try self.clientContext(version)
            XCTAssertEqual(try self.connect(firstServer, client), .connected(resumed: false), "\(version)")

            let rebuilt = try TLSServerContext(configuration: self.openConfiguration(), previous: first)
            XCTAssertTrue(rebuilt.ticketKeyStore === first.ticketKeyStore, "\(version)")
            XCTAssertEqual(try self.connect(self.startServer(rebuilt), client), .connected(resumed: true), "\(version)")

            // Without `previous`, a new random key: the ticket does not decrypt.
            let fresh = try TLSServerContext(configuration: self.openConfiguration())
            XCTAssertEqual(try self.connect(self.startServer(fresh), client), .connected(resumed: false), "\(version)")
        }
    }

    func testKeptRandomKeysStillRefuseSessionsFromBeforeAChangeOfClientAuthentication() throws {
        for version in Self.versions {
            var optional = self.mtlsConfiguration()
            optional.clientCertificateOptional = true
            let before = try TLSServerContext(configuration: optional)
            let client = try self.clientContext(version)
            XCTAssertEqual(try self.connect(self.startServer(before), client), .connected(resumed: false), "\(version)")

            let after = try TLSServerContext(configuration: self.mtlsConfiguration(), previous: before)
            XCTAssertTrue(after.ticketKeyStore === before.ticketKeyStore, "the keys are kept, \(version)")
            let server = try self.startServer(after)
            XCTAssertEqual(try self.connect(server, client), .refused, "\(version)")
            // Refused by the session ID context (a full handshake), not only by the defence behind it.
            try waitUntil("the server's failure") { !server.log.tlsErrors.isEmpty }
            XCTAssertEqual(server.log.tlsErrors.map(\.reason), ["peer did not return a certificate"], "\(version)")
        }
    }

    func testASessionOfAClientRevokedSinceDoesNotResume() throws {
        // Here the session carries a client certificate, so only the session ID context can refuse it.
        for version in Self.versions {
            var withoutCRL = self.mtlsConfiguration()
            withoutCRL.clientCRLFile = nil
            let before = try TLSServerContext(configuration: withoutCRL)
            let beforeServer = try self.startServer(before)
            let client = try self.clientContext(version, revoked: true)
            XCTAssertEqual(try self.connect(beforeServer, client), .connected(resumed: false), "\(version)")
            XCTAssertEqual(try self.connect(beforeServer, client), .connected(resumed: true), "\(version): control")

            let after = try TLSServerContext(configuration: self.mtlsConfiguration(), previous: before)
            XCTAssertTrue(after.ticketKeyStore === before.ticketKeyStore, "the keys are kept, \(version)")
            let server = try self.startServer(after)
            XCTAssertEqual(try self.connect(server, client), .refused, "\(version)")
            try waitUntil("the server's failure") { !server.log.tlsErrors.isEmpty }
            XCTAssertEqual(server.log.tlsErrors.map(\.reason), ["certificate verify failed"], "\(version)")
            XCTAssertTrue(
                server.log.tlsErrors[0].description.contains("certificate revoked"),
                server.log.tlsErrors[0].description
            )
        }
    }

    func testKeysFromAFileOrTicketsOffAreNeverTakenFromThePreviousContext() throws {
        let random = try TLSServerContext(configuration: self.openConfiguration())
        var fixed = self.openConfiguration()
        fixed.ticketKeys = [try TLSTicketKey.random()]
        let fromFile = try TLSServerContext(configuration: fixed, previous: random)
        XCTAssertFalse(fromFile.ticketKeyStore === random.ticketKeyStore)
        // Back to random keys after file keys: new random keys, not the file's.
        let randomAgain = try TLSServerContext(configuration: self.openConfiguration(), previous: fromFile)
        XCTAssertFalse(randomAgain.ticketKeyStore === fromFile.ticketKeyStore)
        var off = self.openConfiguration()
        off.sessionTickets = false
        XCTAssertNil(try TLSServerContext(configuration: off, previous: random).ticketKeyStore)
        let offContext = try TLSServerContext(configuration: off)
        XCTAssertNotNil(try TLSServerContext(configuration: self.openConfiguration(), previous: offContext).ticketKeyStore)
    }
}
