import Foundation
import NIOCore
import NIOPosix
import XCTest

@testable import SecProxyTLS

/// OCSP stapling against `openssl s_client -status`, with responses made by `openssl ocsp` from the
/// test CA.
final class OCSPStaplingTests: TLSTestCase {
    override class func preparePKI(_ pki: TLSTestPKI) throws {
        try makeOCSPResponses(in: pki)
    }

    /// server-ocsp.der (for server.pem) and api-ocsp.der (for api.pem), signed by the CA itself,
    /// from a minimal responder database listing both as valid; server-ocsp-revoked.der from one
    /// listing server.pem as revoked, server-ocsp-unknown.der from one that does not list it.
    /// Each is valid from now (thisUpdate) for a day (nextUpdate).
    static func makeOCSPResponses(in pki: TLSTestPKI) throws {
        let script = #"""
            set -e
            exec 2>make-ocsp.log
            # entry CERT [REVOCATION-TIME]
            entry() {
                serial=$(openssl x509 -in "$1" -noout -serial | cut -d= -f2)
                subject=$(openssl x509 -in "$1" -noout -subject -nameopt compat | sed 's/^subject=//')
                if [ -n "$2" ]; then state=R; else state=V; fi
                printf '%s\t301231235959Z\t%s\t%s\tunknown\t%s\n' "$state" "$2" "$serial" "$subject"
            }
            respond() {  # INDEX CERT OUT
                openssl ocsp -index "$1" -rsigner ca.pem -rkey ca.key -CA ca.pem -issuer ca.pem \
                    -cert "$2" -respout "$3" -ndays 1
            }
            { entry server.pem; entry api.pem; } > ocsp-index.txt
            for name in server api; do
                respond ocsp-index.txt "$name.pem" "$name-ocsp.der"
            done
            { entry server.pem 240101000000Z; entry api.pem; } > ocsp-index-revoked.txt
            respond ocsp-index-revoked.txt server.pem server-ocsp-revoked.der
            entry api.pem > ocsp-index-unknown.txt
            respond ocsp-index-unknown.txt server.pem server-ocsp-unknown.der
            openssl ocsp -respin server-ocsp.der -resp_text -noverify > server-ocsp.txt
            """#
        let path = pki.path("make-ocsp.sh")
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try runProcess("/bin/sh", [path], currentDirectory: pki.directory, timeout: 60)
        guard result.status == 0 else {
            let log = (try? String(contentsOfFile: pki.path("make-ocsp.log"), encoding: .utf8)) ?? ""
            throw TestFailure("making OCSP responses failed (\(result.status)): \(result.stdout) \(log)")
        }
    }

    override class var loopThreads: Int { 1 }
    var server: TestTLSServer!

    var serverResponse: String { self.pki.path("server-ocsp.der") }
    var revokedResponse: String { self.pki.path("server-ocsp-revoked.der") }
    var unknownResponse: String { self.pki.path("server-ocsp-unknown.der") }
    var apiResponse: String { self.pki.path("api-ocsp.der") }

    override func tearDown() {
        self.server?.close()
        self.server = nil
        super.tearDown()
    }

    func configuration(
        response: String?,
        sni: [TLSSNICertificate] = []
    ) -> TLSServerConfiguration {
        var configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.serverChain,
            privateKeyFile: self.pki.serverKey
        )
        configuration.ocspResponseFile = response
        configuration.sniCertificates = sni
        return configuration
    }

    func startServer(_ configuration: TLSServerConfiguration, clock: TestClock? = nil) throws {
        let context: TLSServerContext
        if let clock {
            context = try TLSServerContext(
                configuration: configuration,
                previous: nil,
                sessionIDContext: nil,
                clock: { clock.now }
            )
        } else {
            context = try TLSServerContext(configuration: configuration)
        }
        self.server = try TestTLSServer(group: self.group, context: context)
    }

    /// `openssl s_client` output (stdout and stderr together).
    func sClient(_ extra: [String], serverName: String = "localhost") throws -> String {
        let result = try runProcess(
            "/usr/bin/env",
            [
                "openssl", "s_client", "-connect", "127.0.0.1:\(self.server.port)", "-servername", serverName,
                "-CAfile", self.pki.caFile, "-verify_return_error",
            ] + extra,
            stdin: "hello\n",
            timeout: 20
        )
        XCTAssertEqual(result.status, 0, result.stdout + result.stderr)
        return result.stdout + result.stderr
    }

    func serial(of certificate: String) throws -> String {
        let result = try runProcess("/usr/bin/env", ["openssl", "x509", "-in", certificate, "-noout", "-serial"])
        return String(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines).dropFirst("serial=".count))
    }

    // MARK: - Stapling

    func testStaplesTheResponseWhenTheClientAsksTLS12AndTLS13() throws {
        try self.startServer(self.configuration(response: self.serverResponse))
        let serial = try self.serial(of: self.pki.serverCert)
        for version in ["-tls1_2", "-tls1_3"] {
            let output = try self.sClient(["-status", version])
            XCTAssertTrue(output.contains("OCSP response: \n===="), "\(version): \(output)")
            XCTAssertTrue(output.contains("OCSP Response Status: successful (0x0)"), "\(version): \(output)")
            XCTAssertTrue(output.contains("Cert Status: good"), "\(version): \(output)")
            XCTAssertTrue(output.contains("Serial Number: \(serial)"), "\(version): \(output)")
            XCTAssertTrue(output.contains("Verify return code: 0 (ok)"), "\(version): \(output)")
        }
        // Byte for byte the file: s_client prints the same text as `openssl ocsp -resp_text`.
        let expected = try String(contentsOfFile: self.pki.path("server-ocsp.txt"), encoding: .utf8)
        let produced = expected.split(separator: "\n").first { $0.contains("Produced At:") }
        XCTAssertNotNil(produced)
        XCTAssertTrue(try self.sClient(["-status"]).contains(produced!), "same response as the file")
    }

    func testNoStapleWithoutAStatusRequest() throws {
        try self.startServer(self.configuration(response: self.serverResponse))
        let output = try self.sClient(["-tls1_2", "-tlsextdebug"])
        XCTAssertFalse(output.contains("OCSP"), output)
        XCTAssertFalse(output.contains("status request"), output)
        XCTAssertTrue(output.contains("Verify return code: 0 (ok)"), output)
    }

    func testNoResponseConfiguredMeansNoStaple() throws {
        try self.startServer(self.configuration(response: nil))
        let output = try self.sClient(["-status"])
        XCTAssertTrue(output.contains("OCSP response: no response sent"), output)
    }

    func testEachSNICertificateStaplesItsOwnResponse() throws {
        let withResponse = TLSSNICertificate(
            chainFile: self.pki.apiCert,
            keyFile: self.pki.apiKey,
            ocspResponseFile: self.apiResponse
        )
        let withoutResponse = TLSSNICertificate(chainFile: self.pki.wildcardCert, keyFile: self.pki.wildcardKey)
        try self.startServer(self.configuration(response: self.serverResponse, sni: [withResponse, withoutResponse]))

        let api = try self.sClient(["-status"], serverName: "api.example.org")
        XCTAssertTrue(api.contains("OCSP Response Status: successful"), api)
        XCTAssertTrue(api.contains("Serial Number: \(try self.serial(of: self.pki.apiCert))"), api)

        let wild = try self.sClient(["-status"], serverName: "x.wild.example.org")
        XCTAssertTrue(wild.contains("OCSP response: no response sent"), wild)

        let main = try self.sClient(["-status"], serverName: "localhost")
        XCTAssertTrue(main.contains("Serial Number: \(try self.serial(of: self.pki.serverCert))"), main)
    }

    // MARK: - Bad files

    func write(_ bytes: [UInt8], _ name: String) throws -> String {
        let path = self.pki.path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func initError(_ configuration: TLSServerConfiguration) -> String {
        do {
            _ = try TLSServerContext(configuration: configuration)
            XCTFail("the context was built")
            return ""
        } catch {
            return (error as? TLSError)?.reason ?? "\(error)"
        }
    }

    func testUnusableResponseFilesFailTheContextWithAClearReason() throws {
        let garbage = try self.write(Array("this is not DER".utf8), "garbage.der")
        XCTAssertTrue(
            self.initError(self.configuration(response: garbage))
                .hasPrefix("OCSP response \(garbage): not a DER OCSP response: "),
            self.initError(self.configuration(response: garbage))
        )

        let missing = self.pki.path("missing.der")
        XCTAssertEqual(
            self.initError(self.configuration(response: missing)),
            "OCSP response \(missing): cannot read file: No such file or directory"
        )

        XCTAssertEqual(
            self.initError(self.configuration(response: self.pki.emptyFile)),
            "OCSP response \(self.pki.emptyFile): empty file"
        )

        XCTAssertEqual(
            self.initError(self.configuration(response: self.pki.caFile)),
            "OCSP response \(self.pki.caFile): OCSP response must be DER, not PEM"
        )

        // A certificate in DER parses as DER, but not as an OCSP response.
        let certificateDER = self.pki.path("server-cert.der")
        let converted = try runProcess(
            "/usr/bin/env",
            ["openssl", "x509", "-in", self.pki.serverCert, "-outform", "DER", "-out", certificateDER]
        )
        XCTAssertEqual(converted.status, 0, converted.stderr)
        XCTAssertTrue(
            self.initError(self.configuration(response: certificateDER))
                .hasPrefix("OCSP response \(certificateDER): not a DER OCSP response: ")
        )

        // OCSPResponse { responseStatus tryLater }: well-formed, but nothing to staple.
        let tryLater = try self.write([0x30, 0x03, 0x0A, 0x01, 0x03], "trylater.der")
        XCTAssertEqual(
            self.initError(self.configuration(response: tryLater)),
            "OCSP response \(tryLater): OCSP response status is trylater, not successful"
        )

        let trailing = try self.write(
            Array(try Data(contentsOf: URL(fileURLWithPath: self.serverResponse))) + [0],
            "trailing.der"
        )
        XCTAssertEqual(
            self.initError(self.configuration(response: trailing)),
            "OCSP response \(trailing): not a DER OCSP response: 1 bytes after it"
        )
    }

    func testAResponseForAnotherCertificateIsRefused() throws {
        XCTAssertEqual(
            self.initError(self.configuration(response: self.apiResponse)),
            "OCSP response \(self.apiResponse): OCSP response is not for certificate localhost"
        )
        let sni = TLSSNICertificate(
            chainFile: self.pki.apiCert,
            keyFile: self.pki.apiKey,
            ocspResponseFile: self.serverResponse
        )
        XCTAssertEqual(
            self.initError(self.configuration(response: nil, sni: [sni])),
            "OCSP response \(self.serverResponse): OCSP response is not for certificate api.example.org"
        )
    }

    func testValidateOCSPResponseFile() throws {
        XCTAssertNil(TLSSettingsValidation.validateOCSPResponseFile(self.serverResponse))
        XCTAssertNil(TLSSettingsValidation.validateOCSPResponseFile(self.apiResponse))
        let garbage = try self.write(Array("nope".utf8), "nope.der")
        XCTAssertTrue(
            TLSSettingsValidation.validateOCSPResponseFile(garbage)?.reason.hasPrefix("not a DER OCSP response: ")
                ?? false
        )
        XCTAssertEqual(
            TLSSettingsValidation.validateOCSPResponseFile(self.pki.path("missing.der"))?.reason,
            "cannot read file: No such file or directory"
        )
    }

    // MARK: - Status and validity window

    func testStatusAndValidityWindowDecideWhetherToStaple() throws {
        let now = Date()
        func check(_ response: String, at date: Date) -> TLSSettingsValidation.OCSPResponseCheck {
            TLSSettingsValidation.checkOCSPResponseFile(response, certificateChainFile: self.pki.serverChain, now: date)
        }
        XCTAssertEqual(check(self.serverResponse, at: now), .good)
        XCTAssertEqual(check(self.serverResponse, at: now.addingTimeInterval(23 * 3600)), .good)
        guard case .notStapled(let expired) = check(self.serverResponse, at: now.addingTimeInterval(2 * 86400)) else {
            return XCTFail("a response past its nextUpdate is stapled")
        }
        XCTAssertTrue(expired.hasPrefix("expired at "), expired)
        XCTAssertTrue(expired.hasSuffix(" UTC (nextUpdate); it is not stapled until a fresh response replaces it"), expired)
        guard case .notStapled(let early) = check(self.serverResponse, at: now.addingTimeInterval(-3600)) else {
            return XCTFail("a response before its thisUpdate is stapled")
        }
        XCTAssertTrue(early.hasPrefix("is not valid before "), early)
        XCTAssertTrue(early.hasSuffix(" UTC (thisUpdate); it is not stapled"), early)
        // A responder's clock a little ahead of ours is tolerated.
        XCTAssertEqual(check(self.serverResponse, at: now.addingTimeInterval(-60)), .good)
        XCTAssertEqual(
            check(self.unknownResponse, at: now),
            .notStapled(reason: "gives the status of certificate localhost as unknown; it is not stapled")
        )
        XCTAssertEqual(
            check(self.revokedResponse, at: now),
            .invalid(TLSError(reason: "certificate localhost is revoked (since 2024-01-01 00:00:00 UTC)"))
        )
        // Answering for another certificate is an error here too, at the response's key.
        guard case .invalid(let other) = check(self.apiResponse, at: now) else {
            return XCTFail("a response for another certificate passes")
        }
        XCTAssertEqual(other.reason, "OCSP response is not for certificate localhost")
    }

    func testARevokedCertificateFailsTheContext() throws {
        XCTAssertEqual(
            self.initError(self.configuration(response: self.revokedResponse)),
            "OCSP response \(self.revokedResponse): certificate localhost is revoked"
        )
    }

    func testResponsesOutsideTheirWindowOrOfUnknownStatusAreNotStapled() throws {
        let now = Date()
        let cases: [(String, String, Date)] = [
            ("expired", self.serverResponse, now.addingTimeInterval(2 * 86400)),
            ("not yet valid", self.serverResponse, now.addingTimeInterval(-3600)),
            ("unknown status", self.unknownResponse, now),
        ]
        for (what, response, date) in cases {
            try self.startServer(self.configuration(response: response), clock: TestClock(date))
            let output = try self.sClient(["-status"])
            XCTAssertTrue(output.contains("OCSP response: no response sent"), "\(what): \(output)")
            XCTAssertTrue(output.contains("Verify return code: 0 (ok)"), "\(what): the handshake goes on: \(output)")
            self.server.close()
        }
    }

    func testStaplingStopsOnceNextUpdateHasPassed() throws {
        let clock = TestClock(Date())
        try self.startServer(self.configuration(response: self.serverResponse), clock: clock)
        XCTAssertTrue(try self.sClient(["-status"]).contains("Cert Status: good"))
        clock.now = clock.now.addingTimeInterval(23 * 3600)
        XCTAssertTrue(try self.sClient(["-status"]).contains("Cert Status: good"), "still before nextUpdate")
        clock.now = clock.now.addingTimeInterval(2 * 3600)
        let stale = try self.sClient(["-status"])
        XCTAssertTrue(stale.contains("OCSP response: no response sent"), stale)
        XCTAssertTrue(stale.contains("Verify return code: 0 (ok)"), stale)
    }
}

/// A settable clock for the OCSP checks of a context.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var _now: Date

    init(_ now: Date) {
        self._now = now
    }

    var now: Date {
        get { self.lock.withLock { self._now } }
        set { self.lock.withLock { self._now = newValue } }
    }
}
