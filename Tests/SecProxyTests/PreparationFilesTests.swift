import Foundation
import SecProxyConfig
import SecProxyTestSupport
import XCTest

@testable import SecProxy
@testable import SecProxyTLS

#if canImport(Glibc)
import Glibc
#endif

/// The files a configuration names, as `Preparation.prepare` reads them: every diagnostic about them (text,
/// position, severity), and each file opened and read once, the TLS contexts built from what the checks parsed.
final class PreparationFilesTests: XCTestCase {
    private var temporary: TemporaryDirectory!
    private var ca: TestCA!

    override func setUpWithError() throws {
        temporary = try TemporaryDirectory(prefix: "secproxy-prepare")
        ca = try TestCA(directory: temporary.file("certs"))
    }

    override func tearDown() {
        temporary?.cleanup()
    }

    /// `LINE:COLUMN` of the `occurrence`-th `needle` in `text` (1-based).
    private func location(of needle: String, in text: String, occurrence: Int = 1) -> String {
        var searchStart = text.startIndex
        var found: Range<String.Index>?
        for _ in 0..<occurrence {
            found = text.range(of: needle, range: searchStart..<text.endIndex)
            guard let range = found else { break }
            searchStart = range.upperBound
        }
        guard let range = found else {
            XCTFail("'\(needle)' #\(occurrence) not in the config")
            return "0:0"
        }
        let before = text[..<range.lowerBound]
        let line = before.filter { $0 == "\n" }.count + 1
        let lineStart = before.lastIndex(of: "\n").map { text.index(after: $0) } ?? text.startIndex
        return "\(line):\(text.distance(from: lineStart, to: range.lowerBound) + 1)"
    }

    /// A file of `size` bytes that occupies no disk: larger than any file secproxy reads.
    @discardableResult
    private func sparseFile(_ name: String, size: Int = FileBytes.maximumSize + 1, mode: Int = 0o600) throws -> String {
        let path = try temporary.write(name, "", mode: mode)
        XCTAssertEqual(truncate(path, off_t(size)), 0, String(cString: strerror(errno)))
        return path
    }

    // MARK: - Diagnostics

    /// Every way a named file can be wrong, in three listeners and a backend_tls, each reported at the key that
    /// names the file, with exactly these words (the texts `--check-config` has always printed).
    func testEveryFileProblemIsReportedAtItsKeyWithItsText() throws {
        let expired = try ca.expiredCertificate()
        let soon = try ca.expiringCertificate("soon", days: 10)
        try setMode(soon.keyPath, 0o640)
        try ca.unrelatedKey("other")
        try ca.issue("web")
        try temporary.write("junk.key", "I am no key\n", mode: 0o644)
        try temporary.write("notpem.txt", "no PEM here\n")
        try temporary.write("empty.pem", "")
        try temporary.write("empty.der", "")
        try temporary.write("bad.keys", "not base64!\n", mode: 0o600)
        try temporary.makeDirectory("cadir")
        XCTAssertEqual(mkfifo(temporary.file("fifo.pem"), 0o600), 0, String(cString: strerror(errno)))
        try sparseFile("big.key")
        try sparseFile("big.keys")
        try sparseFile("big.pem", mode: 0o644)

        let text = """
            [[listener]]
            name = "a"
            listen = "127.0.0.1:18501"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "missing.pem"
            key = "junk.key"
            ciphers = "NOT-A-CIPHER"
            client_ca = "cadir"
            client_crl = "certs/ca.pem"
            ticket_key_file = "bad.keys"
            ocsp_response = "empty.der"

            [[listener.tls.sni]]
            cert = "empty.pem"
            key = "certs/web.key"

            [[listener.tls.sni]]
            cert = "fifo.pem"
            key = "big.key"

            [[listener]]
            name = "b"
            listen = "127.0.0.1:18502"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "certs/expired.pem"
            key = "certs/other.key"
            client_ca = "notpem.txt"
            ticket_key_file = "big.keys"
            ocsp_response = "certs/ca.pem"

            [[listener.tls.sni]]
            cert = "big.pem"
            key = "certs/soon.key"

            [[listener]]
            name = "c"
            listen = "127.0.0.1:18503"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "certs/soon.pem"
            key = "certs/soon.key"
            client_ca = "certs/ca.pem"
            client_crl = "notpem.txt"

            [listener.backend_tls]
            ca = "empty.pem"
            server_name = "app.internal"
            cert = "certs/web.pem"
            key = "gone.key"
            """
        let path = try temporary.write("secproxy.toml", text)
        let now = Date()
        let result = Preparation.prepare(path: path, now: now)

        func at(_ needle: String, _ occurrence: Int = 1) -> String {
            "\(path):\(location(of: needle, in: text, occurrence: occurrence))"
        }
        let soonDays = Int(soon.notAfter.timeIntervalSince(now) / 86400)
        let expected = [
            // a
            "\(at("cert = \"missing.pem\"")): error: certificate file 'missing.pem' does not exist",
            "\(at("key = \"junk.key\"")): warning: private key file 'junk.key' is accessible to other users "
                + "(mode 0644); run chmod 600 on it",
            "\(at("key = \"junk.key\"")): error: private key file 'junk.key' is not a PEM private key: not PEM",
            "\(at("ciphers")): error: invalid cipher list 'NOT-A-CIPHER': no cipher match",
            "\(at("client_ca = \"cadir\"")): error: client CA file 'cadir' is a directory, not a regular file",
            "\(at("client_crl = \"certs/ca.pem\"")): error: CRL file 'certs/ca.pem' does not parse: no CRL found",
            "\(at("ticket_key_file = \"bad.keys\"")): error: ticket key file 'bad.keys' is invalid: "
                + "ticket key file \(temporary.file("bad.keys")): line 1: not base64",
            "\(at("ocsp_response = \"empty.der\"")): error: OCSP response file 'empty.der' is invalid: empty file",
            "\(at("cert = \"empty.pem\"")): error: certificate file 'empty.pem' is not a PEM certificate: empty file",
            "\(at("cert = \"fifo.pem\"")): error: certificate file 'fifo.pem' is a FIFO, not a regular file",
            "\(at("key = \"big.key\"")): error: private key file 'big.key' is not a PEM private key: file too large",
            // b
            "\(at("cert = \"certs/expired.pem\"")): error: certificate 'certs/expired.pem' (localhost) expired on "
                + "\(expired.notAfterDay)",
            "\(at("key = \"certs/other.key\"")): error: private key 'certs/other.key' does not match certificate "
                + "'certs/expired.pem'",
            "\(at("client_ca = \"notpem.txt\"")): error: client CA file 'notpem.txt' does not parse: not PEM",
            "\(at("ticket_key_file = \"big.keys\"")): error: ticket key file 'big.keys' is invalid: "
                + "ticket key file \(temporary.file("big.keys")): file too large",
            "\(at("ocsp_response = \"certs/ca.pem\"")): error: OCSP response file 'certs/ca.pem' is invalid: "
                + "OCSP response must be DER, not PEM",
            "\(at("cert = \"big.pem\"")): error: certificate file 'big.pem' is not a PEM certificate: file too large",
            "\(at("key = \"certs/soon.key\"")): warning: private key file 'certs/soon.key' is accessible to its "
                + "group (mode 0640); run chmod 600 on it",
            // c
            "\(at("cert = \"certs/soon.pem\"")): warning: certificate 'certs/soon.pem' (localhost) expires on "
                + "\(soon.notAfterDay), in \(soonDays) days",
            "\(at("key = \"certs/soon.key\"", 2)): warning: private key file 'certs/soon.key' is accessible to its "
                + "group (mode 0640); run chmod 600 on it",
            "\(at("client_crl = \"notpem.txt\"")): error: CRL file 'notpem.txt' does not parse: not PEM",
            "\(at("ca = \"empty.pem\"")): error: backend CA file 'empty.pem' does not parse: empty file",
            "\(at("key = \"gone.key\"")): error: private key file 'gone.key' does not exist",
        ]
        let got = result.diagnostics.map(\.description)
        XCTAssertEqual(got, expected, "\n" + got.joined(separator: "\n"))
        XCTAssertNil(result.prepared)
        XCTAssertEqual(result.failure, .invalidConfiguration)
    }

    /// A problem that only building the context finds (here: a client CA bundle whose certificate parses but whose
    /// CRL does not) is one error at the `[listener.tls]` header, naming the listener and the file.
    func testAProblemOnlyTheContextFindsIsAnErrorAtTheTLSHeader() throws {
        let web = try ca.issue("web")
        let bundle =
            try String(contentsOfFile: ca.caCertPath, encoding: .utf8)
            + "-----BEGIN X509 CRL-----\n" + Data("this is no CRL at all".utf8).base64EncodedString()
            + "\n-----END X509 CRL-----\n"
        let caWithBadCRL = try temporary.write("ca-bad-crl.pem", bundle)
        let text = """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:18504"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "\(web.certPath)"
            key = "\(web.keyPath)"
            client_ca = "ca-bad-crl.pem"
            """
        let path = try temporary.write("secproxy.toml", text)
        let result = Preparation.prepare(path: path)
        XCTAssertNil(result.prepared)
        XCTAssertEqual(result.diagnostics.count, 1, "\(result.diagnostics)")
        let prefix =
            "\(path):\(location(of: "[listener.tls]", in: text)): error: cannot set up TLS for listener 'web': "
            + "client CA \(caWithBadCRL): "
        XCTAssertTrue(result.diagnostics.first?.description.hasPrefix(prefix) ?? false, "\(result.diagnostics)")
    }

    // MARK: - Each file read once

    /// A CRL of the test CA revoking nothing, and an OCSP response saying `certificate` is good, from the CA's
    /// own database (`openssl ca` / `openssl ocsp`).
    private func makeCRLAndOCSP(for certificate: TestCA.Issued) throws -> (crl: String, ocsp: String) {
        let crl = temporary.file("crl.pem")
        let ocsp = temporary.file("web-ocsp.der")
        let script = """
            set -e
            openssl ca -config "$DB/ca.cnf" -gencrl -crldays 30 -out "$CRL" 2>/dev/null
            openssl ocsp -index "$DB/index.txt" -rsigner "$CA" -rkey "$CAKEY" -CA "$CA" -issuer "$CA" \\
                -cert "$CERT" -respout "$OCSP" -ndays 1 >/dev/null 2>&1
            """
        let run = try Subprocess.run(
            "/bin/sh", ["-c", script],
            environment: [
                "DB": ca.directory + "/ca-db", "CRL": crl, "OCSP": ocsp, "CA": ca.caCertPath, "CAKEY": ca.caKeyPath,
                "CERT": certificate.certPath,
            ],
            timeout: 60
        )
        XCTAssertEqual(run.exitCode, 0, run.stdout + run.stderr)
        return (crl, ocsp)
    }

    /// A configuration naming every kind of file: the default and an SNI certificate and key, a client CA (also
    /// the backend CA), a CRL, an OCSP response, a ticket key file, a backend client certificate and key. While
    /// it is prepared, every file is opened exactly once, and the prepared contexts are built.
    func testEveryNamedFileIsOpenedOnceWhilePreparing() throws {
        let web = try ca.issue("web")
        let api = try ca.issue("api", dnsNames: ["api.example.org"])
        let client = try ca.clientCertificate("backend-client")
        let (crl, ocsp) = try makeCRLAndOCSP(for: web)
        let tickets = try temporary.write(
            "tickets.key", Data((0..<80).map { UInt8($0) }).base64EncodedString() + "\n", mode: 0o600
        )
        let text = """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:0"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "\(web.chainPath)"
            key = "\(web.keyPath)"
            client_ca = "\(ca.caCertPath)"
            client_crl = "\(crl)"
            ocsp_response = "\(ocsp)"
            ticket_key_file = "\(tickets)"

            [[listener.tls.sni]]
            cert = "\(api.certPath)"
            key = "\(api.keyPath)"

            [listener.backend_tls]
            ca = "\(ca.caCertPath)"
            server_name = "app.internal"
            cert = "\(client.certPath)"
            key = "\(client.keyPath)"
            """
        let path = try temporary.write("secproxy.toml", text)
        let named = [
            path, web.chainPath, web.keyPath, ca.caCertPath, crl, ocsp, tickets, api.certPath, api.keyPath,
            client.certPath, client.keyPath,
        ]

        let opened = FileBytes.OpenedPaths()
        let result = FileBytes.$openedPaths.withValue(opened) { Preparation.prepare(path: path) }

        XCTAssertEqual(result.diagnostics.map(\.description), [])
        let prepared = try XCTUnwrap(result.prepared)
        XCTAssertNotNil(prepared.tlsContexts["web"])
        XCTAssertNotNil(prepared.backendTLSContexts["web"])
        XCTAssertEqual(Set(opened.all), Set(named), "exactly the named files are opened")
        for file in named {
            XCTAssertEqual(opened.count(file), 1, "\(file) opened \(opened.count(file)) times")
        }
    }
}
