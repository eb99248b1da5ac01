import Foundation
import NIOCore
import NIOPosix
import SecProxyTLS
import XCTest

/// Our server handler against `openssl s_client`, an independent TLS implementation of the same library.
final class TLSOpenSSLInteropTests: TLSTestCase {
    override class var loopThreads: Int { 1 }
    var server: TestTLSServer!

    override func tearDown() {
        self.server?.close()
        self.server = nil
        super.tearDown()
    }

    func startServer(alpn: [String] = []) throws {
        var configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.serverChain,
            privateKeyFile: self.pki.serverKey
        )
        configuration.alpn = alpn
        self.server = try TestTLSServer(group: self.group, context: TLSServerContext(configuration: configuration))
    }

    func sClient(_ extra: [String], input: String = "hello\n") throws -> ProcessResult {
        try runProcess(
            "/usr/bin/env",
            [
                "openssl", "s_client", "-connect", "127.0.0.1:\(self.server.port)", "-servername", "localhost",
                "-CAfile", self.pki.caFile, "-verify_return_error", "-brief",
            ] + extra,
            stdin: input,
            timeout: 20
        )
    }

    func testOpenSSLClientTLS12() throws {
        try self.startServer()
        let result = try self.sClient(["-tls1_2"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stderr.contains("Protocol version: TLSv1.2"), result.stderr)
        XCTAssertTrue(result.stderr.contains("Ciphersuite: ECDHE-ECDSA-"), result.stderr)
        XCTAssertTrue(result.stderr.contains("Verification: OK"), result.stderr)
        try waitUntil("server handshake") { !self.server.log.handshakes.isEmpty }
        let info = self.server.log.handshakes[0]
        XCTAssertEqual(info.version, "TLSv1.2")
        XCTAssertTrue(result.stderr.contains("Ciphersuite: \(info.cipher)"), "\(info.cipher) vs \(result.stderr)")
        XCTAssertEqual(info.serverName, "localhost")
        try waitUntil("server got the line") { self.server.log.receivedCount == 6 }
    }

    func testOpenSSLClientTLS13() throws {
        try self.startServer(alpn: ["h2", "http/1.1"])
        let result = try self.sClient(["-tls1_3", "-alpn", "http/1.1"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stderr.contains("Protocol version: TLSv1.3"), result.stderr)
        try waitUntil("server handshake") { !self.server.log.handshakes.isEmpty }
        let info = self.server.log.handshakes[0]
        XCTAssertEqual(info.version, "TLSv1.3")
        XCTAssertEqual(info.alpn, "http/1.1")
        XCTAssertTrue(result.stderr.contains("Ciphersuite: \(info.cipher)"), "\(info.cipher) vs \(result.stderr)")
        try waitUntil("server got the line") { self.server.log.receivedCount == 6 }
        // s_client ends with close_notify: a half-close for the server, never an error.
        try waitUntil("server input closed") { self.server.log.inputClosedCount == 1 }
        XCTAssertTrue(self.server.log.tlsErrors.isEmpty, "\(self.server.log.tlsErrors)")
    }

    /// The certificates `s_client -showcerts` received, by subject.
    func receivedChain(_ result: ProcessResult) -> [String] {
        result.stdout.split(separator: "\n").compactMap { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard let range = trimmed.range(of: " s:"), Int(trimmed[..<range.lowerBound]) != nil else { return nil }
            return String(trimmed[range.upperBound...])
        }
    }

    /// The chain is sent exactly as the file has it: OpenSSL's auto-chaining (completing a chain given
    /// without intermediates from the context's trust store, for a server the client CAs) is off, and a
    /// file with the CA in it still sends both.
    func testTheCertificateChainIsSentAsConfigured() throws {
        var leafOnly = TLSServerConfiguration(certificateChainFile: self.pki.serverCert, privateKeyFile: self.pki.serverKey)
        // The leaf's issuer is in the client CA store: auto-chaining would append it.
        leafOnly.clientCAFile = self.pki.caFile
        leafOnly.clientCertificateOptional = true
        self.server = try TestTLSServer(group: self.group, context: TLSServerContext(configuration: leafOnly))
        let single = try self.sClientShowingChain()
        XCTAssertEqual(single.status, 0, single.stderr)
        XCTAssertEqual(self.receivedChain(single), ["CN = localhost"], single.stdout)
        self.server.close()

        try self.startServer()
        let both = try self.sClientShowingChain()
        XCTAssertEqual(both.status, 0, both.stderr)
        XCTAssertEqual(self.receivedChain(both), ["CN = localhost", "CN = secproxy test CA"], both.stdout)
    }

    /// `s_client` without `-brief`, so that it prints the chain it received.
    func sClientShowingChain() throws -> ProcessResult {
        try runProcess(
            "/usr/bin/env",
            [
                "openssl", "s_client", "-connect", "127.0.0.1:\(self.server.port)", "-servername", "localhost",
                "-CAfile", self.pki.caFile, "-verify_return_error", "-showcerts",
            ],
            stdin: "hello\n",
            timeout: 20
        )
    }

    func testOldProtocolVersionsAreRefused() throws {
        try self.startServer()
        let result = try self.sClient(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
        XCTAssertNotEqual(result.status, 0)
        try waitUntil("server error") { !self.server.log.tlsErrors.isEmpty }
        XCTAssertEqual(self.server.log.tlsErrors[0].reason, "unsupported protocol")
    }

    func testWeakTLS12CiphersAreNotOffered() throws {
        try self.startServer()
        let result = try self.sClient(["-tls1_2", "-cipher", "AES128-SHA:ECDHE-ECDSA-AES128-SHA"])
        XCTAssertNotEqual(result.status, 0)
        try waitUntil("server error") { !self.server.log.tlsErrors.isEmpty }
        XCTAssertEqual(self.server.log.tlsErrors[0].reason, "no shared cipher")
    }

    func testClientRenegotiationIsRefused() throws {
        try self.startServer()
        // "R" asks s_client to renegotiate (TLS 1.2 only); stdin stays open until we saw the outcome.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "openssl", "s_client", "-connect", "127.0.0.1:\(self.server.port)", "-servername", "localhost",
            "-CAfile", self.pki.caFile, "-tls1_2",
        ]
        let output = ProcessOutput()
        let inPipe = Pipe()
        let outPipe = Pipe()
        let errPipe = Pipe()
        process.standardInput = inPipe
        process.standardOutput = outPipe
        process.standardError = errPipe
        outPipe.fileHandleForReading.readabilityHandler = { output.append(stdout: $0.availableData) }
        errPipe.fileHandleForReading.readabilityHandler = { output.append(stderr: $0.availableData) }
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            outPipe.fileHandleForReading.readabilityHandler = nil
            errPipe.fileHandleForReading.readabilityHandler = nil
        }
        try waitUntil("server handshake") { !self.server.log.handshakes.isEmpty }
        inPipe.fileHandleForWriting.write(Data("R\n".utf8))
        // The server answers the new ClientHello with a no_renegotiation warning; s_client treats
        // that as fatal and sends a handshake_failure alert, which ends the connection.
        try waitUntil("renegotiation refused") { (output.stdout + output.stderr).contains("no renegotiation") }
        try waitUntil("server error") { !self.server.log.tlsErrors.isEmpty }
        let all = output.stdout + output.stderr
        XCTAssertTrue(all.contains("RENEGOTIATING"), all)
        XCTAssertEqual(self.server.log.tlsErrors.map(\.reason), ["sslv3 alert handshake failure"])
        XCTAssertEqual(self.server.log.handshakes.count, 1)
        try? inPipe.fileHandleForWriting.close()
    }
}
