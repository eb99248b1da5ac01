import Foundation
import NIOCore
import NIOPosix
import XCTest

@testable import SecProxyTLS

/// `TLSFileSet`: each file opened and read once, each use parsed once; contexts built from what it parsed open
/// nothing, and trust the certificates it parsed even once the file on disk says otherwise.
final class TLSFileSetTests: TLSTestCase {
    override class var loopThreads: Int { 1 }

    /// A copy of `source` at a new path of the test PKI's folder.
    func copy(_ source: String, to name: String) throws -> String {
        let path = self.pki.path("\(name)-\(UUID().uuidString.prefix(8)).pem")
        try Data(contentsOf: URL(fileURLWithPath: source)).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Replaces the contents of `path` with those of `source`, as an operator (or an attacker) would between
    /// two reads.
    func overwrite(_ path: String, with source: String) throws {
        try Data(contentsOf: URL(fileURLWithPath: source)).write(to: URL(fileURLWithPath: path))
    }

    func testEachFileIsOpenedOnceAndEachUseParsedOnce() throws {
        // One PEM file with the certificate and its key, named both ways (and so read as a secret).
        let combined = self.pki.path("combined-\(UUID().uuidString.prefix(8)).pem")
        let text =
            try String(contentsOfFile: self.pki.serverCert, encoding: .utf8)
            + String(contentsOfFile: self.pki.serverKey, encoding: .utf8)
        try text.write(toFile: combined, atomically: true, encoding: .utf8)
        var files = TLSFileSet(secretPaths: [combined])
        let opened = FileBytes.OpenedPaths()
        try FileBytes.$openedPaths.withValue(opened) {
            let chain = try files.certificateChain(self.pki.serverChain).get()
            XCTAssertTrue(try files.certificateChain(self.pki.serverChain).get()[0] === chain[0], "parsed once")
            XCTAssertEqual(chain.count, 2)
            // ca.pem as a CA bundle and as a certificate file: one read, two parses (one per use).
            let authorities = try files.certificateAuthorities(self.pki.caFile).get()
            XCTAssertEqual(authorities.certificates.count, 1)
            XCTAssertEqual(try files.certificateChain(self.pki.caFile).get().count, 1)
            XCTAssertEqual(try files.certificateAuthorities(self.pki.caFile).get().bytes, authorities.bytes)
            let key = try files.privateKey(combined).get()
            XCTAssertTrue(key.matches(try files.certificateChain(combined).get()[0]))
            _ = try files.revocationList(self.pki.crlFile).get()
            _ = try files.revocationList(self.pki.crlFile).get()
            if case .success = files.open(self.pki.path("missing.pem")) { XCTFail("a missing file opened") }
            if case .success = files.certificateChain(self.pki.path("missing.pem")) { XCTFail("a missing file parsed") }
        }
        XCTAssertEqual(
            opened.all.sorted(),
            [self.pki.serverChain, self.pki.caFile, combined, self.pki.crlFile, self.pki.path("missing.pem")].sorted()
        )
    }

    /// The contexts are built from parsed files alone: not one open while they are built.
    func testContextsBuiltFromParsedFilesOpenNoFile() throws {
        var server = TLSServerConfiguration(
            certificateChainFile: self.pki.serverChain,
            privateKeyFile: self.pki.serverKey
        )
        server.sniCertificates = [TLSSNICertificate(chainFile: self.pki.apiCert, keyFile: self.pki.apiKey)]
        server.clientCAFile = self.pki.caFile
        server.clientCRLFile = self.pki.crlFile
        var client = TLSClientConfiguration()
        client.trustRootsFile = self.pki.caFile
        client.certificateChainFile = self.pki.clientCert
        client.privateKeyFile = self.pki.clientKey

        var files = TLSFileSet(secretPaths: server.secretPaths + client.secretPaths)
        let serverFiles = try TLSServerFiles(loading: server, from: &files)
        let clientFiles = try TLSClientFiles(loading: client, from: &files)
        let opened = FileBytes.OpenedPaths()
        try FileBytes.$openedPaths.withValue(opened) {
            _ = try TLSServerContext(configuration: server, files: serverFiles)
            _ = try TLSClientContext(configuration: client, files: clientFiles)
        }
        XCTAssertEqual(opened.all, [])
    }

    /// The backend side trusts the CA certificates parsed from the one read of the bundle: replacing the file
    /// afterwards (before the context is built) changes nothing, either way. (OpenSSL reading the path again,
    /// `SSL_CTX_load_verify_file`, would have trusted the new contents.)
    func testTrustRootsAreTheCertificatesParsedNotWhatTheFileHoldsLater() throws {
        let server = try TestTLSServer(
            group: self.group,
            context: TLSServerContext(
                configuration: TLSServerConfiguration(
                    certificateChainFile: self.pki.serverChain,
                    privateKeyFile: self.pki.serverKey
                )
            )
        )
        self.servers.append(server)

        func client(trusting roots: String, thenOverwriteWith replacement: String) throws -> TLSClientContext {
            var configuration = TLSClientConfiguration()
            configuration.trustRootsFile = roots
            configuration.verifyHostname = "localhost"
            var files = TLSFileSet()
            let parsed = try TLSClientFiles(loading: configuration, from: &files)
            try self.overwrite(roots, with: replacement)
            return try TLSClientContext(configuration: configuration, files: parsed)
        }
        func handshake(_ context: TLSClientContext) throws -> Bool {
            let connection = try TestClient(
                group: self.group, port: server.port, context: context, serverName: "localhost"
            )
            self.clients.append(connection)
            try waitUntil("handshake or failure") {
                !connection.log.handshakes.isEmpty || !connection.log.tlsErrors.isEmpty
                    || connection.log.closedCount > 0
            }
            return !connection.log.handshakes.isEmpty
        }

        let trusted = try self.copy(self.pki.caFile, to: "roots-trusted")
        XCTAssertTrue(try handshake(client(trusting: trusted, thenOverwriteWith: self.pki.path("otherca.pem"))))
        let untrusted = try self.copy(self.pki.path("otherca.pem"), to: "roots-other")
        XCTAssertFalse(try handshake(client(trusting: untrusted, thenOverwriteWith: self.pki.caFile)))
    }
}
