import Foundation
import SecProxyTestSupport
import XCTest

/// The files shipped next to the code: the development certificate script, `config/dev.toml` and the commented
/// example `config/secproxy.toml` (SPEC §4).
final class RepositoryFilesTests: CLITestCase {
    /// The package root (this file is `Tests/SecProxyCLITests/RepositoryFilesTests.swift`).
    private var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// Copies `relativePath` from the repository into the temporary directory (same relative path).
    @discardableResult
    private func copyFromRepository(_ relativePath: String) throws -> String {
        let source = repositoryRoot.appendingPathComponent(relativePath).path
        guard FileManager.default.fileExists(atPath: source) else {
            throw XCTSkip("\(relativePath) is not in this checkout (\(source))")
        }
        let target = temporary.file(relativePath)
        try FileManager.default.createDirectory(
            atPath: (target as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        try FileManager.default.copyItem(atPath: source, toPath: target)
        return target
    }

    func testDevCertificateScriptIsIdempotentAndDevConfigChecksOut() throws {
        let script = try copyFromRepository("certs-dev/make-dev-certs.sh")
        let config = try copyFromRepository("config/dev.toml")
        let folder = (script as NSString).deletingLastPathComponent

        let first = try Subprocess.run("/bin/bash", [script], timeout: 120)
        XCTAssertEqual(first.exitCode, 0, first.stderr + first.stdout)
        for name in ["ca.pem", "localhost-ecdsa.pem", "localhost-rsa.pem"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(folder)/\(name)"), name)
            let verify = try Subprocess.run(
                "/usr/bin/env",
                ["openssl", "verify", "-CAfile", "\(folder)/ca.pem", "\(folder)/\(name)"]
            )
            XCTAssertEqual(verify.exitCode, 0, "\(name): \(verify.stdout)\(verify.stderr)")
        }
        for key in ["ca.key", "localhost-ecdsa.key", "localhost-rsa.key"] {
            XCTAssertEqual(try fileMode("\(folder)/\(key)"), 0o600, key)
        }
        let sans = try Subprocess.run(
            "/usr/bin/env",
            ["openssl", "x509", "-in", "\(folder)/localhost-ecdsa.pem", "-noout", "-ext", "subjectAltName"]
        ).stdout
        XCTAssertTrue(sans.contains("DNS:localhost") && sans.contains("127.0.0.1"), sans)
        let notAfter = try ca.notAfter(of: "\(folder)/localhost-ecdsa.pem")
        XCTAssertGreaterThan(notAfter.timeIntervalSinceNow, 9 * 365 * 86400, "10-year validity expected")

        // Idempotent: a second run changes nothing; --force makes new material.
        let before = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/ca.pem"))
        let second = try Subprocess.run("/bin/bash", [script], timeout: 60)
        XCTAssertEqual(second.exitCode, 0, second.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(folder)/ca.pem")), before)

        // The development config validates against these certificates.
        let checked = try checkConfig(config)
        XCTAssertEqual(checked.exitCode, 0, checked.stderr)
        let ecdsaExpiry = try ca.notAfter(of: "\(folder)/localhost-ecdsa.pem")
        XCTAssertEqual(
            checked.stdoutLines,
            [
                "\(config): OK (2 listeners, 1 backends, 1 certificates; "
                    + "first expiry \(TestCA.day(ecdsaExpiry)) localhost)"
            ]
        )

        let forced = try Subprocess.run("/bin/bash", [script, "--force"], timeout: 120)
        XCTAssertEqual(forced.exitCode, 0, forced.stderr)
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: "\(folder)/ca.pem")), before)
    }

    func testExampleConfigUsesOnlyKnownKeys() throws {
        let config = try copyFromRepository("config/secproxy.toml")
        let result = try checkConfig(config)
        // The example names certificate files that do not exist here; it must not contain any other mistake.
        let diagnostics = result.stderrLines.filter { $0.hasPrefix("\(config):") }
        for line in diagnostics {
            let lowered = line.lowercased()
            XCTAssertFalse(lowered.contains("unknown") || lowered.contains("did you mean"), line)
            XCTAssertFalse(lowered.contains("expected"), "a wrongly typed value: \(line)")
        }
    }
}
