import Foundation
import SecProxyTestSupport
import XCTest

/// `--check-config`: the success line, JSON output, and compiler-style diagnostics at the right place (SPEC §1, §2).
final class CheckConfigTests: CLITestCase {
    // MARK: - Valid configurations

    /// Two listeners, backends 9001–9003 (9002 twice), a default and an SNI certificate; the SNI one expires first.
    private func writeGoodConfig() throws -> (path: String, text: String, firstExpiry: String) {
        let web = try ca.issue("web", dnsNames: ["localhost", "www.example.test"], notAfter: noonUTC(daysFromNow: 400))
        let api = try ca.issue(
            "api",
            keyType: .rsa2048,
            dnsNames: ["api.example.test"],
            notAfter: noonUTC(daysFromNow: 200)
        )
        XCTAssertLessThan(api.notAfter, web.notAfter)
        let text = """
            [server]
            log_level = "info"

            [defaults]
            idle_timeout = "30s"

            [[listener]]
            name = "web"
            listen = "127.0.0.1:18443"
            mode = "tls"
            backends = ["127.0.0.1:9001", "127.0.0.1:9002"]

            [listener.tls]
            cert = "certs/web.pem"
            key = "certs/web.key"

            [[listener.tls.sni]]
            cert = "certs/api.pem"
            key = "certs/api.key"

            [[listener]]
            name = "raw"
            listen = "127.0.0.1:18081"
            mode = "plain"
            backends = ["127.0.0.1:9002", "127.0.0.1:9003"]
            """
        return (try writeConfig(text), text, "\(api.notAfterDay) api.example.test")
    }

    func testValidConfigPrintsExactlyTheSummaryLine() throws {
        let (path, _, firstExpiry) = try writeGoodConfig()
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        XCTAssertEqual(
            result.stdoutLines,
            ["\(path): OK (2 listeners, 3 backends, 2 certificates; first expiry \(firstExpiry))"]
        )
        XCTAssertFalse(result.stderr.contains(": error:"), result.stderr)
    }

    func testSummaryNounsArePluralAndPathIsAsGiven() throws {
        let cert = try ca.issue("only", dnsNames: ["only.example.test"], notAfter: noonUTC(daysFromNow: 100))
        _ = try writeConfig(
            """
            [[listener]]
            name = "one"
            listen = "127.0.0.1:18444"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "certs/only.pem"
            key = "certs/only.key"
            """,
            name: "relative.toml"
        )
        // A relative -c path, run from the config's folder: printed as given, files resolved from its folder.
        let result = try checkConfig("relative.toml", currentDirectory: temporary.path)
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        XCTAssertEqual(
            result.stdoutLines,
            [
                "relative.toml: OK (1 listeners, 1 backends, 1 certificates; "
                    + "first expiry \(cert.notAfterDay) only.example.test)"
            ]
        )
    }

    func testCertificatePathsAreRelativeToTheConfigFolder() throws {
        let cert = try ca.issue("rel", notAfter: noonUTC(daysFromNow: 300))
        let text = """
            [[listener]]
            name = "one"
            listen = "127.0.0.1:18445"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "../certs/rel.pem"
            key = "../certs/rel.key"
            """
        try temporary.makeDirectory("conf")
        let path = try writeConfig(text, name: "conf/secproxy.toml")
        // Run from elsewhere: the paths must still resolve from conf/.
        let result = try checkConfig(path, currentDirectory: "/")
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        XCTAssertEqual(
            result.stdoutLines,
            ["\(path): OK (1 listeners, 1 backends, 1 certificates; first expiry \(cert.notAfterDay) localhost)"]
        )
    }

    func testJSONFormatForAValidConfig() throws {
        let (path, _, _) = try writeGoodConfig()
        let api = try ca.notAfter(of: temporary.file("certs/api.pem"))
        let result = try checkConfig(path, json: true)
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        let object = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
            result.stdout
        )
        XCTAssertEqual(object["ok"] as? Bool, true)
        XCTAssertEqual((object["diagnostics"] as? [Any])?.count, 0, result.stdout)
        let summary = try XCTUnwrap(object["summary"] as? [String: Any], result.stdout)
        XCTAssertEqual(summary["listeners"] as? Int, 2)
        XCTAssertEqual(summary["backends"] as? Int, 3)
        XCTAssertEqual(summary["certificates"] as? Int, 2)
        let expiry = try XCTUnwrap(summary["first_expiry"] as? [String: Any], result.stdout)
        XCTAssertEqual(expiry["date"] as? String, TestCA.day(api))
        XCTAssertEqual(expiry["name"] as? String, "api.example.test")
    }

    func testJSONFormatForAnInvalidConfigMatchesTheTextDiagnostics() throws {
        let text = """
            [defaults]
            idle_timout = "5m"
            connect_timeout = "soon"

            [[listener]]
            name = "web"
            listen = "127.0.0.1:18446"
            mode = "plain"
            backends = []
            """
        let path = try writeConfig(text)
        let plain = try checkConfig(path)
        let json = try checkConfig(path, json: true)
        XCTAssertEqual(plain.exitCode, 1)
        XCTAssertEqual(json.exitCode, 1)
        let object = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any],
            "stdout: \(json.stdout)"
        )
        XCTAssertEqual(object["ok"] as? Bool, false)
        XCTAssertTrue(object["summary"] is NSNull, "summary must be null: \(json.stdout)")
        let diagnostics = try XCTUnwrap(object["diagnostics"] as? [[String: Any]], json.stdout)
        XCTAssertGreaterThanOrEqual(diagnostics.count, 3, json.stdout)
        let rebuilt = diagnostics.map { diagnostic -> String in
            let file = diagnostic["file"] as? String ?? "?"
            let line = diagnostic["line"] as? Int
            let column = diagnostic["column"] as? Int
            let severity = diagnostic["severity"] as? String ?? "?"
            let message = diagnostic["message"] as? String ?? "?"
            let position = line.map { ":\($0):\(column ?? 0)" } ?? ""
            return "\(file)\(position): \(severity): \(message)"
        }
        let textDiagnostics = plain.stderrLines.filter { $0.hasPrefix("\(path):") }
        XCTAssertEqual(rebuilt, textDiagnostics)
        XCTAssertTrue(
            rebuilt.contains { $0.hasPrefix("\(path):\(location(of: "idle_timout", in: text)): error: ") },
            "\(rebuilt)"
        )
    }

    // MARK: - Several errors in one run

    func testAllProblemsAreReportedInOneRunAtTheirKeys() throws {
        let text = """
            [server]
            log_level = "info"

            [defaults]
              idle_timout = "5m"
            handshake_timeout = "10 parsecs"

            [[listener]]
            name = "web"
            listen = "127.0.0.1:70000"
            mode = "plain"
            backends = []
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        XCTAssertFalse(result.stdout.contains("OK"), result.stdout)
        let lines = result.stderrLines
        let unknown = assertDiagnostic(lines, path: path, at: location(of: "idle_timout", in: text))
        XCTAssertTrue(unknown?.hasSuffix("did you mean 'idle_timeout'?") ?? false, unknown ?? "")
        XCTAssertEqual(location(of: "idle_timout", in: text), "5:3")
        assertDiagnostic(lines, path: path, at: location(of: "handshake_timeout", in: text))
        assertDiagnostic(lines, path: path, at: location(of: "listen =", in: text))
        assertDiagnostic(lines, path: path, at: location(of: "backends", in: text))
    }

    func testListenerProblemsPointAtTheSecondOccurrenceOrTheTableHeader() throws {
        let text = """
            [[listener]]
            name = "a"
            listen = "127.0.0.1:18447"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [[listener]]
            name = "a"
            listen = "127.0.0.1:18447"
            mode = "plain"
            backends = ["127.0.0.1:9001"]
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        let lines = result.stderrLines
        // A tls listener without [listener.tls]: at its [[listener]] header.
        assertDiagnostic(lines, path: path, at: "1:1")
        // Duplicate name and duplicate address: at the second occurrence.
        assertDiagnostic(lines, path: path, at: location(of: "name = \"a\"", in: text, occurrence: 2))
        assertDiagnostic(lines, path: path, at: location(of: "listen =", in: text, occurrence: 2))
    }

    func testTLSTableWithoutKeyIsReportedAtItsHeader() throws {
        let cert = try ca.issue("web")
        let text = """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:18448"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "\(cert.certPath)"
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "[listener.tls]", in: text))
    }

    func testTOMLSyntaxErrorGivesItsLine() throws {
        let text = """
            [defaults]
            idle_timeout = "5m

            [[listener]]
            name = "web"
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        XCTAssertTrue(
            result.stderrLines.contains { $0.hasPrefix("\(path):2:") && $0.contains(": error: ") },
            result.stderr
        )
    }

    func testDuplicateKeyIsReportedAtItsSecondOccurrence() throws {
        let text = """
            [defaults]
            idle_timeout = "5m"
            idle_timeout = "6m"
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: "3:1")
    }

    func testWrongTypesAndBadValues() throws {
        let cert = try ca.issue("web")
        let text = """
            [server]
            max_connections = "many"
            log_level = "loud"

            [defaults]
            buffer_size = "64 parsecs"

            [[listener]]
            name = "web"
            listen = "not-an-address"
            mode = "tls"
            backends = ["127.0.0.1:9001"]
            balance = "sideways"

            [listener.tls]
            cert = "\(cert.certPath)"
            key = "\(cert.keyPath)"
            min_version = "1.1"
            alpn = [""]
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        for key in [
            "max_connections", "log_level", "buffer_size", "listen =", "balance", "min_version", "alpn",
        ] {
            assertDiagnostic(result.stderrLines, path: path, at: location(of: key, in: text))
        }
    }

    func testCipherStringThatOpenSSLRejectsIsReportedAtCiphers() throws {
        let cert = try ca.issue("web")
        let text = """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:18451"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "\(cert.certPath)"
            key = "\(cert.keyPath)"
            ciphers = "NOT-A-REAL-CIPHER"
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "ciphers", in: text))
    }

    func testCAFileThatDoesNotParseIsReportedAtClientCA() throws {
        let cert = try ca.issue("web")
        try temporary.write("garbage.pem", "this is not a certificate\n")
        let text = """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:18452"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "\(cert.certPath)"
            key = "\(cert.keyPath)"
            client_ca = "garbage.pem"
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "client_ca", in: text))
    }

    func testALPNLongerThan255BytesIsAnError() throws {
        let cert = try ca.issue("web")
        let long = String(repeating: "x", count: 256)
        let text = """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:18449"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "\(cert.certPath)"
            key = "\(cert.keyPath)"
            alpn = ["h2", "\(long)"]
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "alpn", in: text))
    }

    // MARK: - Certificates and keys

    private func tlsConfig(cert: String, key: String) -> String {
        """
        [[listener]]
        name = "web"
        listen = "127.0.0.1:18450"
        mode = "tls"
        backends = ["127.0.0.1:9001"]

        [listener.tls]
        cert = "\(cert)"
        key = "\(key)"
        """
    }

    func testKeyThatDoesNotMatchTheCertificateIsReportedAtKey() throws {
        let cert = try ca.issue("web")
        let other = try ca.unrelatedKey()
        let text = tlsConfig(cert: cert.certPath, key: other)
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "key =", in: text))
    }

    func testExpiredCertificateIsAnError() throws {
        let expired = try ca.expiredCertificate()
        let text = tlsConfig(cert: expired.certPath, key: expired.keyPath)
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "cert =", in: text), containing: ["expire"])
    }

    func testCertificateExpiringWithin30DaysIsOnlyAWarning() throws {
        let soon = try ca.expiringCertificate(days: 10)
        let text = tlsConfig(cert: soon.certPath, key: soon.keyPath)
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        assertDiagnostic(
            result.stderrLines,
            path: path,
            at: location(of: "cert =", in: text),
            "warning",
            containing: ["expir"]
        )
        XCTAssertEqual(result.stdoutLines.count, 1, result.stdout)
        XCTAssertTrue(
            result.stdout.hasPrefix("\(path): OK (1 listeners, 1 backends, 1 certificates; first expiry "),
            result.stdout
        )
        XCTAssertFalse(result.stderr.contains(": error:"), result.stderr)
    }

    func testKeyReadableByOthersIsAWarning() throws {
        let cert = try ca.issue("web")
        try setMode(cert.keyPath, 0o644)
        let text = tlsConfig(cert: cert.certPath, key: cert.keyPath)
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "key =", in: text), "warning")
        XCTAssertEqual(result.stdoutLines.count, 1, result.stdout)
    }

    func testMissingCertificateFileIsReportedAtCert() throws {
        let cert = try ca.issue("web")
        let text = tlsConfig(cert: temporary.file("nope.pem"), key: cert.keyPath)
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "cert =", in: text))
    }

    func testCertificateThatIsNotPEMIsReportedAtCert() throws {
        let cert = try ca.issue("web")
        let junk = try temporary.write("junk.pem", "hello, I am not PEM\n")
        let text = tlsConfig(cert: junk, key: cert.keyPath)
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "cert =", in: text))
    }

    func testMissingKeyFileIsReportedAtKey() throws {
        let cert = try ca.issue("web")
        let text = tlsConfig(cert: cert.certPath, key: temporary.file("nope.key"))
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(result.stderrLines, path: path, at: location(of: "key =", in: text))
    }

    // MARK: - Every problem in one run

    func testAnErrorInOneListenerDoesNotHideAMissingCertificateInAnother() throws {
        let cert = try ca.issue("web")
        let text = """
            [[listener]]
            name = "a"
            listen = "127.0.0.1:18460"
            mode = "plain"
            backends = []

            [[listener]]
            name = "b"
            listen = "127.0.0.1:18461"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "missing.pem"
            key = "\(cert.keyPath)"

            [[listener]]
            name = "c"
            listen = "127.0.0.1:18462"
            mode = "tls"
            backends = []

            [listener.tls]
            cert = "\(cert.certPath)"
            key = "also-missing.key"
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        let lines = result.stderrLines
        assertDiagnostic(lines, path: path, at: location(of: "backends = []", in: text), containing: ["empty backend"])
        assertDiagnostic(lines, path: path, at: location(of: "cert = \"missing", in: text), containing: ["does not exist"])
        // The listener with the syntax-level error still has its files checked.
        assertDiagnostic(lines, path: path, at: location(of: "key = \"also", in: text), containing: ["does not exist"])
    }

    // MARK: - Files that are not regular files (issue 7 §3)

    func testCertificateThatIsAFIFOIsAnErrorAndDoesNotHang() throws {
        let cert = try ca.issue("web")
        let fifo = temporary.file("fifo.pem")
        XCTAssertEqual(mkfifo(fifo, 0o600), 0, String(cString: strerror(errno)))
        let text = tlsConfig(cert: fifo, key: cert.keyPath)
        let path = try writeConfig(text)
        // Nothing ever writes to the FIFO: a blocking open or read would hang until the timeout.
        let result = try runSecproxy(["--check-config", "-c", path], timeout: 20)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        assertDiagnostic(
            result.stderrLines, path: path, at: location(of: "cert =", in: text), containing: ["is a FIFO, not a regular file"]
        )
    }

    func testDevicesAndDirectoriesAreNotRegularFiles() throws {
        let cert = try ca.issue("web")
        try temporary.makeDirectory("cadir")
        let text = """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:18463"
            mode = "tls"
            backends = ["127.0.0.1:9001"]

            [listener.tls]
            cert = "\(cert.certPath)"
            key = "/dev/zero"
            client_ca = "cadir"
            ticket_key_file = "/dev/urandom"
            """
        let path = try writeConfig(text)
        let result = try runSecproxy(["--check-config", "-c", path], timeout: 20)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        let lines = result.stderrLines
        assertDiagnostic(lines, path: path, at: location(of: "key =", in: text), containing: ["is a character device"])
        assertDiagnostic(lines, path: path, at: location(of: "client_ca", in: text), containing: ["is a directory"])
        assertDiagnostic(lines, path: path, at: location(of: "ticket_key_file", in: text), containing: ["is a character device"])
    }

    func testConfigurationThatIsAFIFOCannotBeRead() throws {
        let fifo = temporary.file("secproxy.toml")
        XCTAssertEqual(mkfifo(fifo, 0o600), 0, String(cString: strerror(errno)))
        let result = try runSecproxy(["--check-config", "-c", fifo], timeout: 20)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        XCTAssertEqual(
            result.stderrLines,
            ["\(fifo): error: cannot read configuration: a FIFO, not a regular file"]
        )
    }

    func testConfigurationLargerThanOneMiBIsAnError() throws {
        // A valid file made of comments, one byte over the limit.
        let line = "# " + String(repeating: "x", count: 1021) + "\n"
        let text = String(repeating: line, count: 1024) + "#"
        XCTAssertEqual(text.utf8.count, (1 << 20) + 1)
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        XCTAssertEqual(
            result.stderrLines,
            ["\(path): error: cannot read configuration: larger than 1 MiB, the most a configuration may be"]
        )
        // At the limit, the size is not the problem (the file has no listener).
        let atLimit = try checkConfig(try writeConfig(String(text.dropLast()), name: "limit.toml"))
        XCTAssertFalse(atLimit.stderr.contains("larger than"), atLimit.stderr)
    }

    // MARK: - Hostile TOML (issue 7 §3)

    func testTwoHundredThousandBracketsAreAPositionedErrorNotACrash() throws {
        let text = "a = " + String(repeating: "[", count: 200_000) + "\n"
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 1, "a crash exits by a signal: \(result.stderr.prefix(2000))")
        assertDiagnostic(
            result.stderrLines, path: path, at: "1:37", containing: ["nesting is too deep: at most 32 levels"]
        )
    }

    func testReloadOfADeeplyNestedConfigKeepsTheDaemonRunning() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let good = """
            [server]
            log_level = "info"
            drain_timeout = "1s"

            [[listener]]
            name = "raw"
            listen = "127.0.0.1:0"
            mode = "plain"
            backends = ["\(echo.address)"]
            """
        let path = try writeConfig(good)
        let daemon = try ProxyProcess.launch(configPath: path)
        daemons.append(daemon)
        let port = try daemon.port(of: "raw")

        _ = try writeConfig(good + "\nx = " + String(repeating: "[", count: 200_000) + "\n")
        daemon.send(signal: SIGHUP)
        try daemon.waitForMessage("configuration reload failed; keeping the running configuration", timeout: 20)
        // Line 10, in the [[listener]] table (level 1): the 32nd `[` is one level too many.
        XCTAssertTrue(
            daemon.events.contains { ($0["msg"] ?? "").contains(":10:36: error: nesting is too deep") },
            daemon.outputTail()
        )
        // Still serving on the old configuration, and stops cleanly.
        XCTAssertEqual(try daemon.port(of: "raw"), port)
        let python = try PythonClient(directory: temporary)
        let transfer = try python.transfer(ClientOptions(port: port, tls: false), payload: .text("still here"), timeout: 10)
        XCTAssertTrue(transfer.ok, "\(transfer)\n\(daemon.outputTail())")
        XCTAssertEqual(transfer.receivedText, "still here")
        daemon.send(signal: SIGTERM)
        XCTAssertEqual(try daemon.waitForExitCode(timeout: 15), 0, daemon.outputTail())
    }

    // MARK: - Key files (issue 7 §3)

    func testKeyReadableByItsGroupIsAWarning() throws {
        let cert = try ca.issue("web")
        try setMode(cert.keyPath, 0o640)
        let text = tlsConfig(cert: cert.certPath, key: cert.keyPath)
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        assertDiagnostic(
            result.stderrLines, path: path, at: location(of: "key =", in: text), "warning",
            containing: ["accessible to its group (mode 0640)", "chmod 600"]
        )
    }

    func testKeyAndTicketKeyOwnedByAnotherUserAreWarnings() throws {
        guard geteuid() == 0 else { throw XCTSkip("giving a file to another user needs root") }
        let cert = try ca.issue("web")
        let tickets = try temporary.write(
            "tickets.key",
            "# one key\n" + Data((0..<80).map { UInt8($0) }).base64EncodedString() + "\n",
            mode: 0o600
        )
        XCTAssertEqual(chown(cert.keyPath, 65534, 65534), 0)
        XCTAssertEqual(chown(tickets, 65534, 65534), 0)
        try setMode(tickets, 0o604)
        let text = tlsConfig(cert: cert.certPath, key: cert.keyPath) + "\nticket_key_file = \"tickets.key\"\n"
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        let lines = result.stderrLines
        assertDiagnostic(
            lines, path: path, at: location(of: "key =", in: text), "warning",
            containing: ["is owned by", "(uid 65534)", "but secproxy runs as", "(uid 0)"]
        )
        assertDiagnostic(
            lines, path: path, at: location(of: "ticket_key_file", in: text), "warning",
            containing: ["is owned by", "(uid 65534)"]
        )
        assertDiagnostic(
            lines, path: path, at: location(of: "ticket_key_file", in: text), "warning",
            containing: ["accessible to other users (mode 0604)"]
        )
    }

    func testKeyThatCannotBeReadIsExitThreeForTheDaemonAndOneForCheckConfig() throws {
        let cert = try ca.issue("web")
        let text = tlsConfig(cert: cert.certPath, key: temporary.file("gone.key"))
        let path = try writeConfig(text)
        let checked = try checkConfig(path)
        XCTAssertEqual(checked.exitCode, 1, checked.stderr)
        assertDiagnostic(checked.stderrLines, path: path, at: location(of: "key =", in: text), containing: ["does not exist"])

        let daemon = try ProxyProcess(configPath: path)
        daemons.append(daemon)
        try daemon.start()
        XCTAssertEqual(try daemon.waitForExitCode(timeout: 15), 3, daemon.outputTail())
        XCTAssertTrue(
            daemon.process.stderrLines.contains { $0.hasPrefix("\(path):\(location(of: "key =", in: text)): error:") },
            daemon.outputTail()
        )

        // With a configuration error besides, the configuration is what is wrong: exit 1.
        let broken = try writeConfig(text.replacingOccurrences(of: "mode = \"tls\"", with: "mode = \"tls\"\nbalance = \"x\""), name: "broken.toml")
        let other = try ProxyProcess(configPath: broken)
        daemons.append(other)
        try other.start()
        XCTAssertEqual(try other.waitForExitCode(timeout: 15), 1, other.outputTail())
    }

    // MARK: - PROXY trust (issue 7 §2)

    func testAcceptProxyProtocolWithoutTrustedPeersIsAWarningAndBadEntriesAreErrors() throws {
        let text = """
            [[listener]]
            name = "lb"
            listen = "127.0.0.1:18470"
            mode = "plain"
            backends = ["127.0.0.1:9001"]
            accept_proxy_protocol = true
            """
        let path = try writeConfig(text)
        let result = try checkConfig(path)
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        assertDiagnostic(
            result.stderrLines, path: path, at: location(of: "accept_proxy_protocol", in: text), "warning",
            containing: ["any client can claim any address", "proxy_protocol_trusted"]
        )

        let bad = text + "\nproxy_protocol_trusted = [\"10.0.0.0/8\", \"10.0.0.1/8\", \"2001:db8::/200\"]\n"
        let badPath = try writeConfig(bad, name: "bad.toml")
        let checked = try checkConfig(badPath)
        XCTAssertEqual(checked.exitCode, 1, checked.stderr)
        let key = location(of: "proxy_protocol_trusted", in: bad)
        assertDiagnostic(checked.stderrLines, path: badPath, at: key, containing: ["'10.0.0.1/8'", "\"10.0.0.0/8\""])
        assertDiagnostic(checked.stderrLines, path: badPath, at: key, containing: ["'2001:db8::/200'", "0 to 128"])
        XCTAssertFalse(checked.stderr.contains("any client can claim"), checked.stderr)
    }
}
