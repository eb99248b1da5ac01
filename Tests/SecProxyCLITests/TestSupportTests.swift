import Foundation
import SecProxyTestSupport
import XCTest

/// Checks of the shared test helpers themselves, independent of the secproxy binary: if these fail, the proxy
/// tests' failures mean nothing.
final class TestSupportTests: XCTestCase {
    private var temporary: TemporaryDirectory!

    override func setUpWithError() throws {
        temporary = try TemporaryDirectory()
    }

    override func tearDown() {
        temporary?.cleanup()
        temporary = nil
    }

    func testLogfmtParsesQuotedEscapedAndEmptyValues() {
        let line =
            #"ts=2026-01-02T03:04:05Z level=info msg="connection closed" listener=web sni= alpn="" "#
            + #"note="a \"q\" b\\c" reason=client_closed"#
        let fields = Logfmt.parse(line)
        XCTAssertEqual(fields["msg"], "connection closed")
        XCTAssertEqual(fields["listener"], "web")
        XCTAssertEqual(fields["sni"], "")
        XCTAssertEqual(fields["alpn"], "")
        XCTAssertEqual(fields["note"], #"a "q" b\c"#)
        XCTAssertEqual(fields["reason"], "client_closed")
        XCTAssertEqual(Logfmt.keys(line), ["ts", "level", "msg", "listener", "sni", "alpn", "note", "reason"])
    }

    func testTemporaryDirectoryIsRemovedOnCleanup() throws {
        let directory = try TemporaryDirectory()
        let file = try directory.write("a/b.txt", "x", mode: 0o600)
        XCTAssertTrue(directory.path.hasPrefix("/tmp/"))
        XCTAssertEqual(try fileMode(file), 0o600)
        directory.cleanup()
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.path))
    }

    func testSubprocessCapturesLinesAndExitCode() throws {
        let child = Subprocess(
            executable: "/bin/sh",
            arguments: ["-c", "echo one; echo two >&2; read x; echo got $x; exit 7"]
        )
        try child.start()
        try child.waitForLine(containing: "one", in: .stdout, timeout: 5)
        try child.waitForLine(containing: "two", in: .stderr, timeout: 5)
        try child.write("hello\n")
        XCTAssertEqual(try child.waitForExitCode(timeout: 5), 7)
        XCTAssertEqual(child.stdoutLines, ["one", "got hello"])
    }

    func testSubprocessWaitFailsWithOutputWhenTheLineNeverComes() throws {
        let child = Subprocess(executable: "/bin/sh", arguments: ["-c", "echo partial >&2; exit 3"])
        try child.start()
        XCTAssertThrowsError(try child.waitForLine(containing: "never", timeout: 5)) { error in
            XCTAssertTrue("\(error)".contains("partial"), "\(error)")
        }
        let started = Subprocess(executable: "/bin/sleep", arguments: ["30"])
        try started.start()
        XCTAssertThrowsError(try started.waitForExit(timeout: 0.2))
        started.send(signal: SIGTERM)
        XCTAssertEqual(try started.waitForExit(timeout: 5), .signaled(SIGTERM))
    }

    func testCertificateAuthorityMakesVerifiableExpiredAndExpiringCertificates() throws {
        let ca = try TestCA(directory: temporary.file("ca"))
        let ecdsa = try ca.serverCertificate("ecdsa", extraDNSNames: ["api.example.test"])
        let rsa = try ca.serverCertificate("rsa", keyType: .rsa2048)
        XCTAssertTrue(try ca.verifies(ecdsa.certPath))
        XCTAssertTrue(try ca.verifies(rsa.certPath))
        XCTAssertEqual(try fileMode(ecdsa.keyPath), 0o600)
        XCTAssertEqual(try fileMode(rsa.keyPath), 0o600)
        XCTAssertEqual(ecdsa.dnsNames, ["localhost", "api.example.test"])
        XCTAssertEqual(try ca.notAfter(of: ecdsa.certPath), ecdsa.notAfter)

        let expired = try ca.expiredCertificate()
        XCTAssertFalse(try ca.verifies(expired.certPath))
        XCTAssertLessThan(try ca.notAfter(of: expired.certPath), Date())

        let expiring = try ca.expiringCertificate(days: 10)
        let left = try ca.notAfter(of: expiring.certPath).timeIntervalSinceNow / 86400
        XCTAssertEqual(left, 10, accuracy: 0.1)

        let client = try ca.clientCertificate(commonName: "billing")
        XCTAssertTrue(try ca.verifies(client.certPath))

        // The unrelated key does not match the certificate.
        let other = try ca.unrelatedKey()
        let modulus = { (args: [String]) throws -> String in
            try Subprocess.run("/usr/bin/env", ["openssl"] + args).stdout
        }
        let certKey = try modulus(["x509", "-in", ecdsa.certPath, "-noout", "-pubkey"])
        let otherKey = try modulus(["pkey", "-in", other, "-pubout"])
        let ownKey = try modulus(["pkey", "-in", ecdsa.keyPath, "-pubout"])
        XCTAssertEqual(certKey, ownKey)
        XCTAssertNotEqual(certKey, otherKey)
    }

    func testEchoServerEchoesAndHalfClosesWithThePythonClient() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let python = try PythonClient(directory: temporary)
        let small = try python.transfer(
            ClientOptions(port: echo.port, tls: false),
            payload: .text("hello"),
            timeout: 10
        )
        XCTAssertTrue(small.ok, "\(small)")
        XCTAssertEqual(small.receivedText, "hello")
        XCTAssertEqual(small.eof, "fin")

        let big = try python.transfer(
            ClientOptions(port: echo.port, tls: false),
            payload: .random(4 << 20),
            timeout: 30
        )
        XCTAssertTrue(big.ok, "\(big)")
        XCTAssertEqual(big.bytesReceived, 4 << 20)
        XCTAssertEqual(big.sha256Received, big.sha256Sent)
        try waitUntil(timeout: 5, "both connections closed") { echo.activeConnections == 0 }
        XCTAssertEqual(echo.connectionCount, 2)
        XCTAssertEqual(echo.stats.finsReceived, 2)
    }

    func testStreamingServerSendsThePatternThenFin() throws {
        let server = try StreamingServer(amount: .bytes(1_000_000))
        defer { server.stop() }
        let python = try PythonClient(directory: temporary)
        let result = try python.transfer(
            ClientOptions(port: server.port, tls: false),
            after: .waitForEOF,
            checkPattern: true,
            timeout: 20
        )
        XCTAssertTrue(result.ok, "\(result)")
        XCTAssertEqual(result.bytesReceived, 1_000_000)
        XCTAssertEqual(result.patternOk, true)

        let endless = try StreamingServer(amount: .untilStopped)
        defer { endless.stop() }
        let running = try python.startTransfer(
            ClientOptions(port: endless.port, tls: false),
            after: .waitForEOF,
            checkPattern: true,
            timeout: 20
        )
        try waitUntil(timeout: 10, "some bytes streamed") { endless.stats.bytesSent > 100_000 }
        endless.stopStreaming()
        let ended = try running.result()
        XCTAssertTrue(ended.ok, "\(ended)")
        XCTAssertEqual(ended.patternOk, true)
        XCTAssertGreaterThan(ended.bytesReceived, 100_000)
    }

    func testSinkCountsAndRefusingPortRefuses() throws {
        let sink = try SinkServer()
        defer { sink.stop() }
        let python = try PythonClient(directory: temporary)
        let result = try python.transfer(ClientOptions(port: sink.port, tls: false), payload: .random(300_000))
        XCTAssertTrue(result.ok, "\(result)")
        try waitUntil(timeout: 5, "the sink got everything") { sink.bytesReceived == 300_000 }

        let refusing = try RefusingPort()
        let refused = try python.transfer(ClientOptions(port: refusing.port, tls: false), payload: .text("x"))
        XCTAssertFalse(refused.connected)
        XCTAssertTrue(refused.error?.contains("refused") ?? false, "\(refused)")
    }

    func testDriverHoldsConnectionsAndSeesCloses() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let python = try PythonClient(directory: temporary)
        let driver = try python.driver()
        defer { driver.quit() }
        XCTAssertTrue(try driver.open("a", ClientOptions(port: echo.port, tls: false)).ok)
        XCTAssertTrue(try driver.open("b", ClientOptions(port: echo.port, tls: false)).ok)
        try waitUntil(timeout: 5, "two connections") { echo.activeConnections == 2 }
        let reply = try driver.echo("a", "ping")
        XCTAssertTrue(reply.ok, "\(reply)")
        try driver.shutdownWrite("b")
        let closed = try driver.waitClosed("b", timeout: 5)
        XCTAssertEqual(closed.closed, true, "\(closed)")
        XCTAssertEqual(closed.how, "fin")
        let notClosed = try driver.waitClosed("a", timeout: 0.3)
        XCTAssertEqual(notClosed.closed, false)
        let refusing = try RefusingPort()
        let failed = try driver.open("c", ClientOptions(port: refusing.port, tls: false))
        XCTAssertFalse(failed.ok)
        XCTAssertEqual(failed.error, "refused")
    }

    func testTLSClientsAgainstOpenSSLServer() throws {
        let ca = try TestCA(directory: temporary.file("ca"))
        let cert = try ca.serverCertificate()
        let python = try PythonClient(directory: temporary)
        // openssl s_server on an OccupiedPort-style free port is not possible (it binds itself): use -accept 0? No:
        // s_server prints "ACCEPT" with the port when given 0 on OpenSSL 3.
        let server = Subprocess(
            executable: Subprocess.which("openssl")!,
            arguments: [
                "s_server", "-accept", "127.0.0.1:0", "-cert", cert.certPath, "-key", cert.keyPath, "-naccept", "3",
                "-rev",
            ]
        )
        try server.start()
        defer { server.terminate(grace: 1) }
        let accept = try server.waitForLine(containing: "ACCEPT", in: .stdout, timeout: 10)
        let port = try XCTUnwrap(ListenerAddress.split(String(accept.split(separator: " ").last ?? ""))?.port, accept)

        let sClient = try OpenSSLClient.connect(
            port: port,
            serverName: "localhost",
            caFile: ca.caCertPath,
            extraArguments: ["-tls1_2"]
        )
        XCTAssertEqual(sClient.protocolVersion, "TLSv1.2", sClient.stderr)
        XCTAssertTrue(sClient.verified, sClient.stderr)
        XCTAssertTrue(sClient.cipher?.hasPrefix("ECDHE-ECDSA-") ?? false, sClient.stderr)

        let result = try python.transfer(
            ClientOptions(port: port, serverName: "localhost", caFile: ca.caCertPath, minVersion: "1.3"),
            payload: .text("abc\n"),
            after: .close,
            expectBytes: 4,
            timeout: 10
        )
        XCTAssertTrue(result.ok, "\(result)")
        XCTAssertEqual(result.version, "TLSv1.3")
        XCTAssertEqual(result.receivedText, "cba\n")

        let trickle = try python.trickle(port: port, intervalMs: 20, timeout: 0.5)
        XCTAssertFalse(trickle.closed)
        XCTAssertGreaterThan(trickle.totalBytes, 100)
    }

    func testLogLinesParseAsLogfmtOrJSON() {
        let json = #"{"ts":"t","level":"info","msg":"connection closed","alpn":null,"resumed":false,"bytes_in":4}"#
        let fields = ProxyProcess.parseLogLine(json)
        XCTAssertEqual(fields["msg"], "connection closed")
        XCTAssertEqual(fields["alpn"], "")
        XCTAssertEqual(fields["resumed"], "false")
        XCTAssertEqual(fields["bytes_in"], "4")
        XCTAssertEqual(ProxyProcess.parseLogLine("ts=t level=info msg=ready")["msg"], "ready")
        XCTAssertEqual(ListenerAddress.split("[::1]:8443")?.host, "::1")
        XCTAssertEqual(ListenerAddress.split("127.0.0.1:43123")?.port, 43123)
    }
}
