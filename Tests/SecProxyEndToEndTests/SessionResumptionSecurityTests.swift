import Foundation
import SecProxyTestSupport
import XCTest

/// Sessions and client authentication (SPEC §3 "Sessions", issue 7 §1), seen from outside with real clients:
/// `openssl s_client -sess_out/-sess_in` and Python `ssl` sessions against the daemon.
///
/// A session resumes only on a listener whose client-authentication settings are the ones it was established
/// under: not across listeners sharing `ticket_key_file`, not across a reload that adds `client_ca`, revokes the
/// client in `client_crl` or changes `allowed_clients` — for TLS 1.2 tickets and TLS 1.3 PSKs alike. Each refusal
/// has its control: the same session resumes where it should (same listener before the change, or a listener with
/// identical settings), so the ticket itself is good and only the settings refuse it. Identical configurations in
/// two processes sharing one key file resume across each other; random keys survive a reload that keeps them.
final class SessionResumptionSecurityTests: ProxyTestCase {
    static let versions = ["1.2", "1.3"]

    // MARK: - Helpers

    private func openssl() throws -> String {
        guard let path = Subprocess.which("openssl") else {
            throw SubprocessError("the openssl command is not installed")
        }
        return path
    }

    /// A ticket key file as the README says to make it: `openssl rand -base64 80`, mode 0600.
    private func ticketKeyFile(_ name: String = "tickets.key") throws -> String {
        let run = try Subprocess.run(try openssl(), ["rand", "-base64", "80"], timeout: 15)
        XCTAssertEqual(run.exitCode, 0, run.stderr)
        return try temporary.write(name, run.stdout, mode: 0o600)
    }

    /// A CRL of the test CA revoking `revoked` (none: an empty CRL), made with `openssl ca -gencrl`.
    private func crl(_ name: String, revoking revoked: [TestCA.Issued]) throws -> String {
        let out = temporary.file(name)
        let index = temporary.file("\(name)-index.txt")
        let script = #"""
            set -e
            : > "$INDEX"
            for cert in $REVOKED; do
                serial=$(openssl x509 -in "$cert" -noout -serial | cut -d= -f2)
                subject=$(openssl x509 -in "$cert" -noout -subject -nameopt compat | sed 's/^subject=//')
                printf 'R\t301231235959Z\t240101000000Z\t%s\tunknown\t%s\n' "$serial" "$subject" >> "$INDEX"
            done
            echo 1000 > "$INDEX.crlnumber"
            printf '[ca]\ndefault_ca = crl\n[crl]\ndatabase = %s\ncrlnumber = %s\ndefault_md = sha256\ndefault_crl_days = 30\n' \
                "$INDEX" "$INDEX.crlnumber" > "$INDEX.cnf"
            openssl ca -gencrl -batch -config "$INDEX.cnf" -keyfile "$CAKEY" -cert "$CA" -out "$OUT"
            """#
        let scriptPath = try temporary.write("\(name).sh", script)
        let run = try Subprocess.run(
            "/bin/sh",
            [scriptPath],
            environment: [
                "INDEX": index, "REVOKED": revoked.map(\.certPath).joined(separator: " "), "CA": ca.caCertPath,
                "CAKEY": ca.caKeyPath, "OUT": out,
            ],
            timeout: 60
        )
        XCTAssertEqual(run.exitCode, 0, run.stdout + run.stderr)
        return out
    }

    /// `openssl s_client` arguments for `version` ("1.2" or "1.3"), with a client certificate when given.
    private func sClientArguments(port: Int, version: String, client: TestCA.Issued?) -> [String] {
        var arguments = [
            "s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost", "-CAfile", ca.caCertPath,
            "-verify_return_error", version == "1.2" ? "-tls1_2" : "-tls1_3",
        ]
        if let client { arguments += ["-cert", client.certPath, "-key", client.keyPath] }
        return arguments
    }

    /// Connects with s_client and saves the session to a new file; returns its path.
    ///
    /// TLS 1.2: the session is known at the end of the handshake. TLS 1.3: it comes in a NewSessionTicket after
    /// the handshake, so s_client keeps running (stdin open) until it wrote the session file (its stdout is
    /// buffered in a pipe, so the file is what to wait on).
    private func takeSession(port: Int, version: String, client: TestCA.Issued? = nil) throws -> String {
        let session = temporary.file("session-\(UUID().uuidString.prefix(8)).pem")
        let arguments = sClientArguments(port: port, version: version, client: client) + ["-sess_out", session]
        let output: String
        if version == "1.2" {
            let run = try Subprocess.run(try openssl(), arguments, input: Data(), timeout: 20)
            XCTAssertEqual(run.exitCode, 0, run.stdout + run.stderr)
            output = run.stdout + run.stderr
        } else {
            let child = Subprocess(executable: try openssl(), arguments: arguments)
            try child.start()
            defer { child.terminate(grace: 2) }
            try waitUntil(timeout: 20, "s_client writes the TLS 1.3 session", state: { child.outputTail() }) {
                let text = (try? String(contentsOfFile: session, encoding: .utf8)) ?? ""
                return text.contains("-----END SSL SESSION PARAMETERS-----")
            }
            child.closeStdin()
            XCTAssertEqual(try child.waitForExit(timeout: 20), .exited(0), child.outputTail())
            output = child.stdout + child.stderr
        }
        XCTAssertTrue(output.contains("New, TLSv\(version)"), output)
        XCTAssertTrue(FileManager.default.fileExists(atPath: session), "s_client wrote no session file")
        let text = try Subprocess.run(try openssl(), ["sess_id", "-in", session, "-noout", "-text"], timeout: 15)
        XCTAssertTrue(text.stdout.contains("TLS session ticket:"), "no ticket in the session:\n\(text.stdout)")
        return session
    }

    /// Offers `session` with s_client (nil: none); returns everything it printed (stdout and stderr).
    private func offer(_ session: String?, port: Int, version: String, client: TestCA.Issued? = nil) throws -> String {
        let arguments = sClientArguments(port: port, version: version, client: client) + (session.map { ["-sess_in", $0] } ?? [])
        let run = try Subprocess.run(try openssl(), arguments, input: Data(), timeout: 20)
        return run.stdout + run.stderr
    }

    /// Waits for the `count`-th connection line of `listener` and returns it.
    @discardableResult
    private func connectionLine(
        _ proxy: ProxyProcess,
        listener: String,
        number count: Int
    ) throws -> [String: String] {
        let lines = try proxy.waitForLogs(count: count, timeout: 15, "\(count) connection line(s) of \(listener)") {
            $0["msg"] == "connection closed" && $0["listener"] == listener
        }
        return lines[count - 1]
    }

    /// Asserts that the session was resumed on `listener`: `Reused,` printed, the line says `resumed=true` and
    /// the backend was reached.
    private func assertResumed(
        _ output: String,
        version: String,
        _ proxy: ProxyProcess,
        listener: String,
        line number: Int,
        backend: EchoServer,
        backendConnections: Int,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws {
        XCTAssertTrue(output.contains("Reused, TLSv\(version)"), output, file: file, line: line)
        let fields = try connectionLine(proxy, listener: listener, number: number)
        XCTAssertEqual(fields["resumed"], "true", "\(fields)", file: file, line: line)
        XCTAssertEqual(fields["tls_version"], "TLSv\(version)", "\(fields)", file: file, line: line)
        try waitUntil(timeout: 10, "backend connection \(backendConnections)") {
            backend.stats.connectionCount >= backendConnections
        }
        XCTAssertEqual(backend.stats.connectionCount, backendConnections, file: file, line: line)
    }

    /// Asserts that the session was not resumed and the client was refused before any backend: no `Reused,`,
    /// the line says `reason=handshake_failed` (and `error`, when given), the backend saw no new connection.
    ///
    /// - Parameter error: "peer did not return a certificate" says a full handshake was demanded: the session
    ///   ID context refused the session, not the defence in depth behind it ("resumed session without client
    ///   certificate").
    private func assertRefused(
        _ output: String,
        _ proxy: ProxyProcess,
        listener: String,
        line number: Int,
        backend: EchoServer,
        backendConnections: Int,
        error: String? = nil,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws {
        XCTAssertFalse(output.contains("Reused,"), output, file: file, line: line)
        let fields = try connectionLine(proxy, listener: listener, number: number)
        // A failed handshake has no resumed value; a completed one refused later (allowed_clients) says false.
        XCTAssertNotEqual(fields["resumed"], "true", "\(fields)", file: file, line: line)
        XCTAssertEqual(fields["reason"], "handshake_failed", "\(fields)", file: file, line: line)
        if let error {
            XCTAssertEqual(fields["error"], error, "\(fields)", file: file, line: line)
        }
        XCTAssertEqual(backend.stats.connectionCount, backendConnections, "the backend was reached", file: file, line: line)
    }

    /// Rewrites the config and reloads with SIGHUP; waits for `configuration reloaded`.
    private func reload(_ proxy: ProxyProcess, with config: ProxyConfig) throws {
        try config.write(to: temporary)
        let before = proxy.events.filter { $0["msg"] == "configuration reloaded" }.count
        proxy.send(signal: SIGHUP)
        try proxy.waitForLogs(count: before + 1, timeout: 20, "configuration reloaded") {
            $0["msg"] == "configuration reloaded"
        }
    }

    private func mtlsSettings(_ extra: [String: TOMLValue] = [:]) -> [String: TOMLValue] {
        var settings: [String: TOMLValue] = ["client_ca": .string(ca.caCertPath), "client_auth": "require"]
        for (key, value) in extra { settings[key] = value }
        return settings
    }

    // MARK: - Across listeners (the reproduction of issue 7 §1)

    func testASessionOfAListenerWithoutClientCertificatesIsRefusedOnAnMTLSListenerSharingTheKeyFile() throws {
        let key = try ticketKeyFile()
        for version in Self.versions {
            let echo = try echoBackend()
            let proxy = try startProxy(
                ProxyConfig(listeners: [
                    tlsListener("open", backends: [echo.address], tlsSettings: ["ticket_key_file": .string(key)]),
                    tlsListener("mtls", backends: [echo.address], tlsSettings: mtlsSettings(["ticket_key_file": .string(key)])),
                ])
            )
            let open = try proxy.port(of: "open")
            let mtls = try proxy.port(of: "mtls")
            // Without a certificate, mtls refuses a full handshake.
            let direct = try offer(nil, port: mtls, version: version)
            try assertRefused(direct, proxy, listener: "mtls", line: 1, backend: echo, backendConnections: 0)

            let session = try takeSession(port: open, version: version)
            try connectionLine(proxy, listener: "open", number: 1)
            // Control: the ticket is good where it was issued.
            try assertResumed(
                try offer(session, port: open, version: version), version: version, proxy, listener: "open", line: 2,
                backend: echo, backendConnections: 2
            )
            let stolen = try offer(session, port: mtls, version: version)
            try assertRefused(
                stolen, proxy, listener: "mtls", line: 2, backend: echo, backendConnections: 2,
                error: "peer did not return a certificate"
            )
            print("[\(version)] s_client -sess_in on mtls: \(summary(stolen))")
        }
    }

    func testPythonSessionsDoNotCrossFromAnOpenToAnMTLSListener() throws {
        let key = try ticketKeyFile()
        let echo = try echoBackend()
        let proxy = try startProxy(
            ProxyConfig(listeners: [
                tlsListener("open", backends: [echo.address], tlsSettings: ["ticket_key_file": .string(key)]),
                tlsListener("open2", backends: [echo.address], tlsSettings: ["ticket_key_file": .string(key)]),
                tlsListener("mtls", backends: [echo.address], tlsSettings: mtlsSettings(["ticket_key_file": .string(key)])),
            ])
        )
        for version in Self.versions {
            let result = try resumeWithPython(
                version: version,
                from: proxy.port(of: "open"),
                to: [proxy.port(of: "open"), proxy.port(of: "mtls")]
            )
            XCTAssertEqual(result.first.ok, true, "\(version): \(result)")
            XCTAssertEqual(result.next[0].reused, true, "\(version): control, the same listener resumes: \(result)")
            XCTAssertEqual(result.next[0].echoed, true, "\(version): \(result)")
            XCTAssertNotEqual(result.next[1].reused, true, "\(version): resumed on mtls: \(result)")
            XCTAssertEqual(result.next[1].echoed, false, "\(version): data went through mtls: \(result)")
            print("[\(version)] Python session offered to mtls: \(result.next[1])")
        }
        // Three successful connections per version (first, control and its echo), none through mtls.
        let mtlsLines = proxy.connectionLogs.filter { $0["listener"] == "mtls" }
        XCTAssertEqual(mtlsLines.count, Self.versions.count, "\(mtlsLines)")
        XCTAssertTrue(
            mtlsLines.allSatisfy {
                $0["reason"] == "handshake_failed" && $0["resumed"] != "true"
                    && $0["error"] == "peer did not return a certificate"
            },
            "\(mtlsLines)"
        )
        XCTAssertEqual(echo.stats.connectionCount, 2 * Self.versions.count)
        // A listener with another name but otherwise the same settings does not take the session either.
        let other = try resumeWithPython(version: "1.3", from: proxy.port(of: "open"), to: [proxy.port(of: "open2")])
        XCTAssertEqual(other.next[0].reused, false, "\(other)")
        XCTAssertEqual(other.next[0].echoed, true, "a full handshake: \(other)")
    }

    // MARK: - Across a reload

    func testAReloadThatAddsClientCARefusesEarlierSessions() throws {
        let key = try ticketKeyFile()
        for version in Self.versions {
            let echo = try echoBackend()
            let before = ProxyConfig(listeners: [
                tlsListener("web", backends: [echo.address], tlsSettings: ["ticket_key_file": .string(key)])
            ])
            let proxy = try startProxy(before)
            let port = try proxy.port(of: "web")
            let session = try takeSession(port: port, version: version)
            try connectionLine(proxy, listener: "web", number: 1)
            try assertResumed(
                try offer(session, port: port, version: version), version: version, proxy, listener: "web", line: 2,
                backend: echo, backendConnections: 2
            )

            try reload(
                proxy,
                with: ProxyConfig(listeners: [
                    tlsListener("web", backends: [echo.address], tlsSettings: mtlsSettings(["ticket_key_file": .string(key)]))
                ])
            )
            let output = try offer(session, port: port, version: version)
            try assertRefused(
                output, proxy, listener: "web", line: 3, backend: echo, backendConnections: 2,
                error: "peer did not return a certificate"
            )
            print("[\(version)] after the reload adding client_ca: \(summary(output))")
        }
    }

    func testAReloadThatRevokesTheClientInTheCRLRefusesItsSessions() throws {
        let key = try ticketKeyFile()
        let alice = try ca.clientCertificate("alice", commonName: "alice")
        let emptyCRL = try crl("empty.crl", revoking: [])
        let revokingAlice = try crl("alice.crl", revoking: [alice])
        for version in Self.versions {
            let echo = try echoBackend()
            func config(_ crl: String) -> ProxyConfig {
                ProxyConfig(listeners: [
                    tlsListener(
                        "mtls", backends: [echo.address],
                        tlsSettings: mtlsSettings(["ticket_key_file": .string(key), "client_crl": .string(crl)])
                    )
                ])
            }
            let proxy = try startProxy(config(emptyCRL))
            let port = try proxy.port(of: "mtls")
            let session = try takeSession(port: port, version: version, client: alice)
            try connectionLine(proxy, listener: "mtls", number: 1)
            try assertResumed(
                try offer(session, port: port, version: version, client: alice), version: version, proxy,
                listener: "mtls", line: 2, backend: echo, backendConnections: 2
            )

            try reload(proxy, with: config(revokingAlice))
            let output = try offer(session, port: port, version: version, client: alice)
            try assertRefused(
                output, proxy, listener: "mtls", line: 3, backend: echo, backendConnections: 2,
                error: "certificate verify failed"
            )
            print("[\(version)] after the reload revoking alice: \(summary(output))")
        }
    }

    func testAReloadThatChangesAllowedClientsRefusesEarlierSessions() throws {
        let key = try ticketKeyFile()
        let alice = try ca.clientCertificate("alice", commonName: "alice")
        for version in Self.versions {
            let echo = try echoBackend()
            func config(_ allowed: String) -> ProxyConfig {
                ProxyConfig(listeners: [
                    tlsListener(
                        "mtls", backends: [echo.address],
                        tlsSettings: mtlsSettings(["ticket_key_file": .string(key), "allowed_clients": [.string(allowed)]])
                    )
                ])
            }
            let proxy = try startProxy(config("cn:alice"))
            let port = try proxy.port(of: "mtls")
            let session = try takeSession(port: port, version: version, client: alice)
            try connectionLine(proxy, listener: "mtls", number: 1)
            // Control: a resumed session is checked against allowed_clients with the certificate it carries.
            try assertResumed(
                try offer(session, port: port, version: version, client: alice), version: version, proxy,
                listener: "mtls", line: 2, backend: echo, backendConnections: 2
            )

            try reload(proxy, with: config("cn:bob"))
            let output = try offer(session, port: port, version: version, client: alice)
            try assertRefused(
                output, proxy, listener: "mtls", line: 3, backend: echo, backendConnections: 2,
                error: "client certificate not allowed"
            )
            XCTAssertEqual(try connectionLine(proxy, listener: "mtls", number: 3)["resumed"], "false")
            print("[\(version)] after the reload allowing only bob: \(summary(output))")
        }
    }

    // MARK: - What must still resume

    func testTwoProcessesWithIdenticalConfigsAndOneKeyFileResumeAcrossEachOther() throws {
        let key = try ticketKeyFile()
        let alice = try ca.clientCertificate("alice", commonName: "alice")
        let echo = try echoBackend()
        let config = ProxyConfig(listeners: [
            tlsListener(
                "fleet", backends: [echo.address],
                tlsSettings: mtlsSettings(["ticket_key_file": .string(key), "allowed_clients": ["cn:alice"]])
            )
        ])
        var proxies: [ProxyProcess] = []
        for name in ["one", "two"] {
            let proxy = try ProxyProcess(configPath: try config.write(to: temporary, name: "\(name).toml"))
            try proxy.start()
            addTeardownBlock { proxy.terminate() }
            try proxy.waitUntilReady(timeout: 20)
            proxies.append(proxy)
        }
        XCTAssertNotEqual(proxies[0].pid, proxies[1].pid)
        let ports = try proxies.map { try $0.port(of: "fleet") }
        var connections = 0
        for version in Self.versions {
            let session = try takeSession(port: ports[0], version: version, client: alice)
            connections += 1
            let output = try offer(session, port: ports[1], version: version, client: alice)
            connections += 1
            try assertResumed(
                output, version: version, proxies[1], listener: "fleet", line: connections / 2, backend: echo,
                backendConnections: connections
            )
            print("[\(version)] the other process: \(summary(output))")
            // And with Python, each way.
            let python = try resumeWithPython(
                version: version, from: ports[1], to: [ports[0]], client: alice
            )
            XCTAssertEqual(python.next[0].reused, true, "\(version): \(python)")
            XCTAssertEqual(python.next[0].echoed, true, "\(version): \(python)")
            connections += 2
        }
    }

    func testRandomTicketKeysSurviveAReloadThatDoesNotChangeThem() throws {
        for version in Self.versions {
            let echo = try echoBackend()
            func config(idle: String) -> ProxyConfig {
                ProxyConfig(listeners: [
                    tlsListener("web", backends: [echo.address], settings: ["idle_timeout": .string(idle)])
                ])
            }
            let proxy = try startProxy(config(idle: "5m"))
            let port = try proxy.port(of: "web")
            let session = try takeSession(port: port, version: version)
            try connectionLine(proxy, listener: "web", number: 1)

            try reload(proxy, with: config(idle: "4m"))
            try assertResumed(
                try offer(session, port: port, version: version), version: version, proxy, listener: "web", line: 2,
                backend: echo, backendConnections: 2
            )
            // A second reload, and the key is still the one the ticket was made with.
            try reload(proxy, with: config(idle: "3m"))
            try assertResumed(
                try offer(session, port: port, version: version), version: version, proxy, listener: "web", line: 3,
                backend: echo, backendConnections: 3
            )
        }
    }

    // MARK: - Python ssl sessions

    struct PythonResumption: Decodable, CustomStringConvertible {
        struct Attempt: Decodable, CustomStringConvertible {
            var ok: Bool
            var reused: Bool?
            var echoed: Bool
            var error: String?
            var description: String {
                "ok=\(ok) reused=\(reused.map { "\($0)" } ?? "-") echoed=\(echoed) error=\(error ?? "-")"
            }
        }
        var first: Attempt
        var next: [Attempt]
        var description: String { "first: \(first); next: \(next)" }
    }

    /// Connects to `from` (round-trips a line, so a TLS 1.3 ticket has arrived), takes `SSLSocket.session`, then
    /// offers it to each port of `to` in turn.
    private func resumeWithPython(
        version: String,
        from: Int,
        to ports: [Int],
        client: TestCA.Issued? = nil
    ) throws -> PythonResumption {
        let script = try temporary.write("resume.py", Self.pythonScript)
        var arguments = [script, ca.caCertPath, version, String(from)] + ports.map(String.init)
        if let client { arguments = [script, "--cert", client.certPath, "--key", client.keyPath] + arguments.dropFirst() }
        let run = try Subprocess.run(python.python, arguments, timeout: 30)
        XCTAssertEqual(run.exitCode, 0, run.stdout + run.stderr)
        guard let line = run.stdoutLines.last else { throw SubprocessError("resume.py printed nothing: \(run.stderr)") }
        return try JSONDecoder().decode(PythonResumption.self, from: Data(line.utf8))
    }

    static let pythonScript = #"""
        import json, socket, ssl, sys

        args = sys.argv[1:]
        cert = key = None
        if args[0] == "--cert":
            cert, key, args = args[1], args[3], args[4:]
        cafile, version, first, rest = args[0], args[1], int(args[2]), [int(p) for p in args[3:]]

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile)
        v = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
        context.minimum_version = v
        context.maximum_version = v
        if cert:
            context.load_cert_chain(cert, key)

        def attempt(port, session=None):
            result = {"ok": False, "reused": None, "echoed": False, "error": None, "session": None}
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                        result["reused"] = tls.session_reused
                        tls.sendall(b"ping")
                        got = b""
                        while len(got) < 4:
                            chunk = tls.recv(4 - len(got))
                            if not chunk:
                                break
                            got += chunk
                        result["echoed"] = got == b"ping"
                        result["session"] = tls.session
                        result["ok"] = result["echoed"]
            except (OSError, ssl.SSLError) as error:
                result["error"] = f"{type(error).__name__}: {error}"
            return result

        first_result = attempt(first)
        session = first_result.pop("session")
        next_results = []
        for port in rest:
            r = attempt(port, session)
            r.pop("session")
            next_results.append(r)
        print(json.dumps({"first": first_result, "next": next_results}))
        """#

    /// The lines of s_client output that show what happened: `New,`/`Reused,` and errors.
    private func summary(_ output: String) -> String {
        output.split(separator: "\n").filter {
            $0.hasPrefix("New,") || $0.hasPrefix("Reused,") || $0.contains("error") || $0.contains("alert")
        }.joined(separator: " | ")
    }
}
