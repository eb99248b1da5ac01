import Foundation
import SecProxyTestSupport
import XCTest

/// `[listener.tls] ticket_key_file` and `ocsp_response` seen from outside: two daemons sharing ticket keys resume
/// each other's TLS 1.2 sessions, a staple reaches `openssl s_client -status`, and `--check-config` points at the
/// line of a bad file.
final class TicketKeyAndOCSPEndToEndTests: ProxyTestCase {
    // MARK: - Helpers

    private func openssl() throws -> String {
        guard let path = Subprocess.which("openssl") else {
            throw SubprocessError("the openssl command is not installed")
        }
        return path
    }

    /// A ticket key file as the README says to make it: `openssl rand -base64 80`, mode 0600.
    private func ticketKeyFile(_ name: String) throws -> String {
        let run = try Subprocess.run(try openssl(), ["rand", "-base64", "80"], timeout: 15)
        XCTAssertEqual(run.exitCode, 0, run.stderr)
        let path = try temporary.write(name, run.stdout, mode: 0o600)
        return path
    }

    /// Runs `openssl s_client` (not `-brief`, so the `New,`/`Reused,` line and OCSP text are printed); stdin is
    /// empty, so s_client ends after the handshake.
    private func sClient(port: Int, _ extra: [String]) throws -> (exitCode: Int32, output: String) {
        let arguments =
            [
                "s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost", "-CAfile", ca.caCertPath,
                "-verify_return_error",
            ] + extra
        let run = try Subprocess.run(try openssl(), arguments, input: Data(), timeout: 20)
        return (run.exitCode, run.stdout + run.stderr)
    }

    /// Starts one daemon (config file `name.toml`) with one TLS listener (named `listener`, default `name`) using
    /// `tlsSettings`; returns it with its port.
    private func startTLSProxy(
        _ name: String,
        listener: String? = nil,
        backend: String,
        tlsSettings: [String: TOMLValue]
    ) throws -> (ProxyProcess, Int) {
        let listener = listener ?? name
        let config = ProxyConfig(listeners: [tlsListener(listener, backends: [backend], tlsSettings: tlsSettings)])
        let path = try config.write(to: temporary, name: "\(name).toml")
        let proxy = try ProxyProcess(configPath: path)
        try proxy.start()
        addTeardownBlock { proxy.terminate() }
        do {
            try proxy.waitUntilReady(timeout: 20)
        } catch {
            throw SubprocessError("\(name) did not become ready: \(error)\n\(proxy.outputTail())")
        }
        return (proxy, try proxy.port(of: listener))
    }

    /// 1-based line number of the first line of `text` containing `needle`.
    private func lineNumber(of needle: String, in text: String) -> Int? {
        text.components(separatedBy: "\n").firstIndex { $0.contains(needle) }.map { $0 + 1 }
    }

    /// `--check-config` on a one-listener config with `tlsSettings`; asserts exit 1 and an `error:` at `key`'s line.
    private func assertCheckConfigFails(
        at key: String,
        tlsSettings: [String: TOMLValue],
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws {
        let config = ProxyConfig(listeners: [tlsListener("web", backends: ["127.0.0.1:9"], tlsSettings: tlsSettings)])
        let text = config.rendered
        let path = try config.write(to: temporary, name: "check-\(key).toml")
        let keyLine = try XCTUnwrap(lineNumber(of: "\(key) = ", in: text), text, file: file, line: line)
        let result = try runSecproxy(["--check-config", "-c", path])
        XCTAssertEqual(result.exitCode, 1, result.stdout + result.stderr, file: file, line: line)
        XCTAssertTrue(
            result.stderrLines.contains { $0.hasPrefix("\(path):\(keyLine):") && $0.contains(": error: ") },
            "expected an error at \(path):\(keyLine) (the \(key) line); stderr:\n\(result.stderr)\nconfig:\n\(text)",
            file: file,
            line: line
        )
    }

    /// Runs s_client -tls1_2 against A saving the session, then against B offering it; returns B's s_client output
    /// and B's connection line fields. A and B are two processes with the same listener ("fleet"): a session
    /// resumes only on a listener of the same name and client-authentication settings (SPEC §3 "Sessions").
    private func resumeAcross(keyA: String, keyB: String) throws -> (output: String, fields: [String: String]) {
        let echo = try echoBackend()
        let (proxyA, portA) = try startTLSProxy(
            "a", listener: "fleet", backend: echo.address, tlsSettings: ["ticket_key_file": .string(keyA)]
        )
        let (proxyB, portB) = try startTLSProxy(
            "b", listener: "fleet", backend: echo.address, tlsSettings: ["ticket_key_file": .string(keyB)]
        )
        XCTAssertNotEqual(proxyA.pid, proxyB.pid)

        let session = temporary.file("session.pem")
        let first = try sClient(port: portA, ["-tls1_2", "-sess_out", session])
        XCTAssertEqual(first.exitCode, 0, first.output + proxyA.outputTail())
        XCTAssertTrue(first.output.contains("New, TLSv1.2"), first.output)
        XCTAssertTrue(FileManager.default.fileExists(atPath: session), "s_client wrote no session file")
        let sessionText = try Subprocess.run(try openssl(), ["sess_id", "-in", session, "-noout", "-text"], timeout: 15)
        XCTAssertTrue(
            sessionText.stdout.contains("TLS session ticket:"),
            "A issued no session ticket:\n\(sessionText.stdout)"
        )
        let lineA = try XCTUnwrap(proxyA.waitForConnectionLogs(count: 1).first)
        XCTAssertEqual(lineA["resumed"], "false", "\(lineA)")
        XCTAssertEqual(lineA["tls_version"], "TLSv1.2", "\(lineA)")

        let second = try sClient(port: portB, ["-tls1_2", "-sess_in", session])
        XCTAssertEqual(second.exitCode, 0, second.output + proxyB.outputTail())
        let logs = try proxyB.waitForConnectionLogs(count: 1)
        XCTAssertEqual(logs.count, 1, "\(logs)")
        return (second.output, logs[0])
    }

    // MARK: - Ticket keys

    func testSharedTicketKeyFileResumesOnTheOtherProcess() throws {
        let key = try ticketKeyFile("tickets.key")
        let (output, fields) = try resumeAcross(keyA: key, keyB: key)
        XCTAssertTrue(output.contains("Reused, TLSv1.2"), output)
        XCTAssertEqual(fields["resumed"], "true", "\(fields)")
        XCTAssertEqual(fields["listener"], "fleet", "\(fields)")
        XCTAssertEqual(fields["tls_version"], "TLSv1.2", "\(fields)")
    }

    func testDifferentTicketKeyFilesDoNotResume() throws {
        let keyA = try ticketKeyFile("tickets-a.key")
        let keyB = try ticketKeyFile("tickets-b.key")
        let (output, fields) = try resumeAcross(keyA: keyA, keyB: keyB)
        XCTAssertTrue(output.contains("New, TLSv1.2"), output)
        XCTAssertFalse(output.contains("Reused,"), output)
        XCTAssertEqual(fields["resumed"], "false", "\(fields)")
    }

    func testCheckConfigRejectsAMalformedTicketKeyFile() throws {
        // 40 bytes, not a multiple of 80.
        let short = try temporary.write("short.key", Data(repeating: 7, count: 40).base64EncodedString() + "\n", mode: 0o600)
        try assertCheckConfigFails(at: "ticket_key_file", tlsSettings: ["ticket_key_file": .string(short)])
        // Not base64 at all.
        let junk = try temporary.write("junk.key", "this is *not* base64!\n", mode: 0o600)
        try assertCheckConfigFails(at: "ticket_key_file", tlsSettings: ["ticket_key_file": .string(junk)])
        // A good file passes (so the failures above are about the contents).
        let good = try ticketKeyFile("good.key")
        let config = ProxyConfig(
            listeners: [tlsListener("web", backends: ["127.0.0.1:9"], tlsSettings: ["ticket_key_file": .string(good)])]
        )
        let path = try config.write(to: temporary, name: "good.toml")
        let result = try runSecproxy(["--check-config", "-c", path])
        XCTAssertEqual(result.exitCode, 0, result.stdout + result.stderr)
    }

    // MARK: - OCSP

    /// A successful OCSP response for `serverCert`, signed by the test CA (as in OCSPStaplingTests).
    private func makeOCSPResponse() throws -> String {
        let out = temporary.file("server-ocsp.der")
        let script = #"""
            set -e
            serial=$(openssl x509 -in "$CERT" -noout -serial | cut -d= -f2)
            subject=$(openssl x509 -in "$CERT" -noout -subject -nameopt compat | sed 's/^subject=//')
            printf 'V\t301231235959Z\t\t%s\tunknown\t%s\n' "$serial" "$subject" > "$DIR/ocsp-index.txt"
            openssl ocsp -index "$DIR/ocsp-index.txt" -rsigner "$CA" -rkey "$CAKEY" -CA "$CA" -issuer "$CA" \
                -cert "$CERT" -respout "$OUT" -ndays 1
            """#
        let scriptPath = try temporary.write("make-ocsp.sh", script)
        let run = try Subprocess.run(
            "/bin/sh",
            [scriptPath],
            environment: [
                "CERT": serverCert.certPath, "CA": ca.caCertPath, "CAKEY": ca.caKeyPath, "OUT": out,
                "DIR": temporary.path,
            ],
            timeout: 60
        )
        XCTAssertEqual(run.exitCode, 0, run.stdout + run.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out), run.stderr)
        return out
    }

    func testOCSPResponseIsStapledWhenTheClientAsks() throws {
        let response = try makeOCSPResponse()
        let echo = try echoBackend()
        let (proxy, port) = try startTLSProxy("web", backend: echo.address, tlsSettings: ["ocsp_response": .string(response)])
        let status = try sClient(port: port, ["-status"])
        XCTAssertEqual(status.exitCode, 0, status.output + proxy.outputTail())
        XCTAssertTrue(status.output.contains("OCSP Response Status: successful"), status.output)
        XCTAssertTrue(status.output.contains("Cert Status: good"), status.output)
        XCTAssertTrue(status.output.contains("Verify return code: 0 (ok)"), status.output)
        let plain = try sClient(port: port, [])
        XCTAssertEqual(plain.exitCode, 0, plain.output)
        XCTAssertFalse(plain.output.contains("OCSP Response Status"), plain.output)
        try proxy.waitForConnectionLogs(count: 2)
    }

    func testCheckConfigRejectsAGarbageOCSPResponse() throws {
        let garbage = try temporary.write("garbage.der", "this is not DER\n")
        try assertCheckConfigFails(at: "ocsp_response", tlsSettings: ["ocsp_response": .string(garbage)])
    }
}
