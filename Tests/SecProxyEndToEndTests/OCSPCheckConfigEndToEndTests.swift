import Foundation
import SecProxyTestSupport
import XCTest

/// `ocsp_response` status checks seen from `--check-config` and the daemon (issue 7 §3): a response saying the
/// certificate is revoked is an error at the `ocsp_response` line; one the daemon would not staple (here: status
/// unknown) is a warning there, the config stays valid and the daemon runs without stapling it.
final class OCSPCheckConfigEndToEndTests: ProxyTestCase {
    /// An OCSP response for `serverCert` from a responder database where it is `state` ("V" valid, "R" revoked,
    /// nil: not listed, so the status is unknown), signed by the test CA, valid for a day.
    private func response(_ name: String, state: String?) throws -> String {
        let out = temporary.file("\(name).der")
        let script = #"""
            set -e
            serial=$(openssl x509 -in "$CERT" -noout -serial | cut -d= -f2)
            subject=$(openssl x509 -in "$CERT" -noout -subject -nameopt compat | sed 's/^subject=//')
            case "$STATE" in
                V) printf 'V\t301231235959Z\t\t%s\tunknown\t%s\n' "$serial" "$subject" > "$INDEX" ;;
                R) printf 'R\t301231235959Z\t240101000000Z\t%s\tunknown\t%s\n' "$serial" "$subject" > "$INDEX" ;;
                *) : > "$INDEX" ;;
            esac
            openssl ocsp -index "$INDEX" -rsigner "$CA" -rkey "$CAKEY" -CA "$CA" -issuer "$CA" \
                -cert "$CERT" -respout "$OUT" -ndays 1
            """#
        let scriptPath = try temporary.write("\(name).sh", script)
        let run = try Subprocess.run(
            "/bin/sh",
            [scriptPath],
            environment: [
                "CERT": serverCert.certPath, "CA": ca.caCertPath, "CAKEY": ca.caKeyPath, "OUT": out,
                "INDEX": temporary.file("\(name)-index.txt"), "STATE": state ?? "",
            ],
            timeout: 60
        )
        XCTAssertEqual(run.exitCode, 0, run.stdout + run.stderr)
        return out
    }

    /// Writes a one-listener config stapling `response`; returns its path and the line of `ocsp_response`.
    private func config(_ response: String, name: String) throws -> (path: String, ocspLine: Int) {
        let config = ProxyConfig(
            listeners: [tlsListener("web", backends: ["127.0.0.1:9"], tlsSettings: ["ocsp_response": .string(response)])]
        )
        let path = try config.write(to: temporary, name: name)
        let line = try XCTUnwrap(config.rendered.components(separatedBy: "\n").firstIndex { $0.hasPrefix("ocsp_response = ") })
        return (path, line + 1)
    }

    func testARevokedCertificateIsAnErrorAtTheOCSPResponseKey() throws {
        let (path, line) = try config(try response("revoked", state: "R"), name: "revoked.toml")
        let result = try runSecproxy(["--check-config", "-c", path])
        XCTAssertEqual(result.exitCode, 1, result.stdout + result.stderr)
        XCTAssertTrue(
            result.stderrLines.contains {
                $0.hasPrefix("\(path):\(line):") && $0.contains(": error: ")
                    && $0.contains("certificate localhost is revoked (since 2024-01-01 00:00:00 UTC)")
            },
            result.stderr
        )
    }

    func testAResponseThatWouldNotBeStapledIsAWarningAtTheOCSPResponseKey() throws {
        let (path, line) = try config(try response("unknown", state: nil), name: "unknown.toml")
        let result = try runSecproxy(["--check-config", "-c", path])
        XCTAssertEqual(result.exitCode, 0, result.stdout + result.stderr)
        XCTAssertTrue(
            result.stderrLines.contains {
                $0.hasPrefix("\(path):\(line):") && $0.contains(": warning: ")
                    && $0.hasSuffix("gives the status of certificate localhost as unknown; it is not stapled")
            },
            result.stderr
        )
        // The daemon runs, without the staple.
        let proxy = try startProxy(
            ProxyConfig(listeners: [
                tlsListener(
                    "web", backends: [try echoBackend().address],
                    tlsSettings: ["ocsp_response": .string(temporary.file("unknown.der"))]
                )
            ])
        )
        let run = try Subprocess.run(
            try XCTUnwrap(Subprocess.which("openssl")),
            [
                "s_client", "-connect", "127.0.0.1:\(try proxy.port(of: "web"))", "-servername", "localhost",
                "-CAfile", ca.caCertPath, "-verify_return_error", "-status",
            ],
            input: Data(),
            timeout: 20
        )
        XCTAssertTrue(run.stdout.contains("OCSP response: no response sent"), run.stdout)
    }

    func testAGoodResponseGetsNoDiagnostic() throws {
        let (path, _) = try config(try response("good", state: "V"), name: "good.toml")
        let result = try runSecproxy(["--check-config", "-c", path])
        XCTAssertEqual(result.exitCode, 0, result.stdout + result.stderr)
        XCTAssertFalse(result.stderr.contains("OCSP"), result.stderr)
    }
}
