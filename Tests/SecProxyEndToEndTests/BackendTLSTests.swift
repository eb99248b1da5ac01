import Foundation
import SecProxyTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Re-encryption towards the backends (SPEC §2 `[listener.backend_tls]`, `connect_timeout`; §3 Forwarding):
/// the backend's certificate is verified against `ca` and `server_name`, a backend that fails the TLS
/// handshake (wrong name, not TLS at all, silent) is skipped for the next one, and `cert`/`key` give the
/// proxy a client certificate for backends that require one.
final class BackendTLSTests: ProxyTestCase {
    private var tlsBackends: [BTLSBackend] = []

    override func tearDown() {
        for backend in tlsBackends { backend.stop() }
        tlsBackends = []
        super.tearDown()
    }

    // MARK: - World building

    /// Starts a Python TLS echo backend with `cert` (or, with `silent`, one that accepts TCP and never answers).
    private func tlsBackend(
        cert: TestCA.Issued? = nil,
        clientCA: String? = nil,
        silent: Bool = false
    ) throws -> BTLSBackend {
        var options: [String: Any] = ["mode": silent ? "silent" : "tls"]
        if !silent {
            let cert = cert ?? serverCert!
            options["cert"] = cert.certPath
            options["key"] = cert.keyPath
        }
        if let clientCA { options["client_ca"] = clientCA }
        let script = try temporary.write("backends/tls_backend.py", BTLSBackend.script)
        let backend = try BTLSBackend(python: python.python, script: script, options: options)
        tlsBackends.append(backend)
        return backend
    }

    /// A plain listener whose backends are reached over TLS.
    private func backendTLSListener(
        _ name: String,
        backends: [String],
        ca: String? = nil,
        serverName: String? = "localhost",
        clientCert: TestCA.Issued? = nil,
        settings: [String: TOMLValue] = [:]
    ) -> ProxyConfig.Listener {
        var table = "[listener.backend_tls]\n"
        table += "ca = \(tomlQuoted(ca ?? self.ca.caCertPath))\n"
        if let serverName { table += "server_name = \(tomlQuoted(serverName))\n" }
        if let clientCert {
            table += "cert = \(tomlQuoted(clientCert.certPath))\n"
            table += "key = \(tomlQuoted(clientCert.keyPath))\n"
        }
        var listener = ProxyConfig.Listener.plain(name, backends: backends, settings: settings)
        listener.extraTOML = table
        return listener
    }

    /// Starts a daemon with `listeners` (debug logs: the failed backend attempts are logged at debug).
    private func start(_ listeners: [ProxyConfig.Listener]) throws -> ProxyProcess {
        try startProxy(ProxyConfig(server: ["log_level": "debug"], listeners: listeners))
    }

    /// The `connection closed` line of the client whose local port is `port`, parsed.
    private func connectionFields(_ proxy: ProxyProcess, _ result: TransferResult) throws -> [String: String] {
        Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort, "\(result)")))
    }

    /// The `backend connect failed` debug lines of `listener` for `backend`.
    private func connectFailures(_ proxy: ProxyProcess, listener: String, backend: String) -> [[String: String]] {
        proxy.events.filter {
            $0["msg"] == "backend connect failed" && $0["listener"] == listener && $0["backend"] == backend
        }
    }

    // MARK: - Tests

    func testVerifiedTLSBackendCarriesOneMebibyteIntact() throws {
        let backend = try tlsBackend()
        let proxy = try start([backendTLSListener("web", backends: [backend.address])])
        let address = try proxy.address(of: "web")
        let size = 1 << 20
        let result = try python.transfer(.plain(address), payload: .random(size), timeout: 60)
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())\n\(backend.outputTail())")
        XCTAssertEqual(result.bytesSent, size)
        XCTAssertEqual(result.bytesReceived, size)
        XCTAssertEqual(result.sha256Received, result.sha256Sent, "the bytes came back changed")

        let fields = try connectionFields(proxy, result)
        XCTAssertEqual(fields["backend"], backend.address, "\(fields)")
        XCTAssertEqual(fields["reason"], "client_closed", "\(fields)")
        XCTAssertEqual(fields["bytes_in"], String(size), "\(fields)")
        XCTAssertEqual(fields["bytes_out"], String(size), "\(fields)")

        // The backend saw a TLS connection with the configured SNI, and echoed every byte.
        let handshake = try backend.waitForEvent("handshake")
        XCTAssertEqual(handshake["sni"] as? String, "localhost", "server_name must be sent as SNI: \(handshake)")
        let closed = try backend.waitForEvent("closed")
        XCTAssertEqual(closed["bytes"] as? Int, size, "\(closed)")
    }

    func testWrongServerNameRejectsTheBackendAndTheNextOneIsUsed() throws {
        // The first backend's certificate is for localhost; server_name asks for other.example.
        let localhostBackend = try tlsBackend()
        let otherCert = try ca.issue("other", dnsNames: ["other.example"], ipAddresses: [])
        let otherBackend = try tlsBackend(cert: otherCert)
        let proxy = try start([
            backendTLSListener("only", backends: [localhostBackend.address], serverName: "other.example"),
            backendTLSListener(
                "failover",
                backends: [localhostBackend.address, otherBackend.address],
                serverName: "other.example"
            ),
        ])

        // Only the mismatching backend: the client is closed, reason backend_unavailable.
        let only = try proxy.address(of: "only")
        let rejected = try python.transfer(.plain(only), payload: .text("ping"), after: .waitForEOF, timeout: 10)
        XCTAssertTrue(rejected.connected, "\(rejected)")
        XCTAssertEqual(rejected.bytesReceived, 0, "nothing may come back from a rejected backend: \(rejected)")
        XCTAssertNotNil(rejected.eof, "the client must be closed: \(rejected)")
        let rejectedFields = try connectionFields(proxy, rejected)
        XCTAssertEqual(rejectedFields["reason"], "backend_unavailable", "\(rejectedFields)")
        XCTAssertEqual(rejectedFields["backend"], "", "no backend was connected: \(rejectedFields)")
        let failedHandshake = try localhostBackend.waitForEvent("handshake_failed")
        XCTAssertNil(
            localhostBackend.events.first { $0["event"] as? String == "closed" && ($0["bytes"] as? Int ?? 0) > 0 },
            "no byte may reach a rejected backend: \(localhostBackend.events)"
        )
        XCTAssertFalse(
            connectFailures(proxy, listener: "only", backend: localhostBackend.address).isEmpty,
            "the rejected backend attempt should be logged\n\(proxy.outputTail())\n\(failedHandshake)"
        )

        // Listed with a good one: two connections (whatever the rotation's start, one of them tries the
        // mismatching backend first) are both served by the backend whose certificate names other.example.
        let failover = try proxy.address(of: "failover")
        for index in 0..<2 {
            let text = "via other.example \(index)"
            let served = try python.transfer(.plain(failover), payload: .text(text), timeout: 10)
            XCTAssertTrue(served.ok, "\(served)\n\(proxy.outputTail())")
            XCTAssertEqual(served.receivedText, text)
            let servedFields = try connectionFields(proxy, served)
            XCTAssertEqual(servedFields["backend"], otherBackend.address, "\(servedFields)")
            XCTAssertEqual(servedFields["reason"], "client_closed", "\(servedFields)")
        }
        XCTAssertEqual(
            connectFailures(proxy, listener: "failover", backend: localhostBackend.address).count,
            1,
            "the mismatching backend must have been tried (and rejected) once\n\(proxy.outputTail())"
        )
        let handshake = try otherBackend.waitForEvent("handshake")
        XCTAssertEqual(handshake["sni"] as? String, "other.example", "\(handshake)")
    }

    func testPlainBackendFirstFailsOverToTheTLSBackend() throws {
        let plain = try echoBackend()
        let backend = try tlsBackend()
        let proxy = try start([backendTLSListener("web", backends: [plain.address, backend.address])])
        let address = try proxy.address(of: "web")
        // Two connections: whatever the rotation's start, one of them tries the plain backend first.
        for index in 0..<2 {
            let text = "not to the plain one \(index)"
            let result = try python.transfer(.plain(address), payload: .text(text), timeout: 10)
            XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
            XCTAssertEqual(result.receivedText, text)
            let fields = try connectionFields(proxy, result)
            XCTAssertEqual(fields["backend"], backend.address, "\(fields)")
        }
        XCTAssertEqual(plain.connectionCount, 1, "the plain backend must have been tried once")
        XCTAssertEqual(
            connectFailures(proxy, listener: "web", backend: plain.address).count,
            1,
            "\(proxy.outputTail())"
        )
        _ = try backend.waitForEvent("handshake")
    }

    func testSilentBackendIsAbandonedAfterConnectTimeout() throws {
        let silent = try tlsBackend(silent: true)
        let backend = try tlsBackend()
        let settings: [String: TOMLValue] = ["connect_timeout": "500ms"]
        let proxy = try start([
            backendTLSListener("only", backends: [silent.address], settings: settings),
            backendTLSListener("failover", backends: [silent.address, backend.address], settings: settings),
        ])

        // The only backend never answers the handshake: closed after connect_timeout, reason connect_timeout.
        let only = try proxy.address(of: "only")
        let timedOut = try python.transfer(.plain(only), payload: .text("ping"), after: .waitForEOF, timeout: 10)
        XCTAssertTrue(timedOut.connected, "\(timedOut)")
        XCTAssertNil(timedOut.error, "the proxy must close the client: \(timedOut)")
        XCTAssertEqual(timedOut.bytesReceived, 0, "\(timedOut)")
        XCTAssertGreaterThanOrEqual(timedOut.elapsedMs, 450, "closed before connect_timeout: \(timedOut)")
        XCTAssertLessThanOrEqual(timedOut.elapsedMs, 1500, "closed long after connect_timeout: \(timedOut)")
        let fields = try connectionFields(proxy, timedOut)
        XCTAssertEqual(fields["reason"], "connect_timeout", "\(fields)")
        XCTAssertGreaterThanOrEqual(
            Int(fields["duration_ms"] ?? "") ?? -1,
            450,
            "duration_ms must cover the wait: \(fields)"
        )
        _ = try silent.waitForEvent("accepted")

        // With a good backend listed too: two connections (whatever the rotation's start, one of them tries the
        // silent backend first); both are served by the good one, and one of them waited connect_timeout.
        let failover = try proxy.address(of: "failover")
        var elapsed: [Double] = []
        for index in 0..<2 {
            let text = "after the silent one \(index)"
            let served = try python.transfer(.plain(failover), payload: .text(text), timeout: 10)
            XCTAssertTrue(served.ok, "\(served)\n\(proxy.outputTail())")
            XCTAssertEqual(served.receivedText, text)
            let servedFields = try connectionFields(proxy, served)
            XCTAssertEqual(servedFields["backend"], backend.address, "\(servedFields)")
            XCTAssertEqual(servedFields["reason"], "client_closed", "\(servedFields)")
            elapsed.append(served.elapsedMs)
        }
        elapsed.sort()
        XCTAssertLessThan(elapsed[0], 450, "one connection went straight to the good backend: \(elapsed) ms")
        XCTAssertGreaterThanOrEqual(elapsed[1], 450, "the silent backend was not waited for: \(elapsed) ms")
        XCTAssertLessThanOrEqual(elapsed[1], 1500, "the next backend came long after connect_timeout: \(elapsed) ms")
        try waitUntil(timeout: 5, "two connections accepted by the silent backend", state: { "\(silent.events)" }) {
            silent.events.filter { $0["event"] as? String == "accepted" }.count == 2
        }
    }

    func testBackendMutualTLSPresentsTheClientCertificate() throws {
        let backend = try tlsBackend(clientCA: ca.caCertPath)
        let clientCert = try ca.clientCertificate("proxy-client", commonName: "secproxy-backend-client")
        let proxy = try start([
            backendTLSListener("mtls", backends: [backend.address], clientCert: clientCert),
            backendTLSListener("nocert", backends: [backend.address]),
        ])

        let mtls = try proxy.address(of: "mtls")
        let result = try python.transfer(.plain(mtls), payload: .text("with a client certificate"), timeout: 10)
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())\n\(backend.outputTail())")
        XCTAssertEqual(result.receivedText, "with a client certificate")
        let handshake = try backend.waitForEvent("handshake")
        XCTAssertEqual(handshake["client_cn"] as? String, "secproxy-backend-client", "\(handshake)")
        XCTAssertEqual(try connectionFields(proxy, result)["backend"], backend.address)

        // Counter-check: without cert/key the same backend refuses the proxy, so nothing is echoed.
        let nocert = try proxy.address(of: "nocert")
        let refused = try python.transfer(
            .plain(nocert), payload: .text("no certificate"), after: .waitForEOF, timeout: 10
        )
        XCTAssertNotEqual(refused.receivedText, "no certificate", "\(refused)")
        XCTAssertEqual(refused.bytesReceived, 0, "\(refused)")
        _ = try backend.waitForEvent("handshake_failed")
        let fields = try connectionFields(proxy, refused)
        XCTAssertNotEqual(fields["reason"], "client_closed", "the backend refused the proxy: \(fields)")
    }

    func testCheckConfigReportsANonPEMCAAtItsKey() throws {
        let echo = try echoBackend()
        let notPEM = try temporary.write("backend-ca.txt", "this is not a PEM certificate\n")
        let config = ProxyConfig(listeners: [
            backendTLSListener("web", backends: [echo.address], ca: notPEM)
        ])
        let path = try config.write(to: temporary)
        let lines = config.rendered.components(separatedBy: "\n")
        let caLine = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("ca = ") }, config.rendered) + 1

        let result = try runSecproxy(["--check-config", "-c", path])
        XCTAssertEqual(result.exitCode, 1, "\(result.stdout)\n\(result.stderr)")
        XCTAssertEqual(result.stdout, "", "nothing on stdout when invalid: \(result.stdout)")
        let errors = result.stderrLines.filter { $0.contains(": error: ") }
        XCTAssertFalse(errors.isEmpty, result.stderr)
        XCTAssertTrue(
            errors.contains { $0.hasPrefix("\(path):\(caLine):1: error: ") },
            "an error at the 'ca' key (\(path):\(caLine):1):\n\(result.stderr)"
        )
    }
}

// MARK: - Python TLS backend

/// A Python TLS echo server (or, in `silent` mode, one that accepts TCP connections and never answers) on
/// 127.0.0.1:0. Every event is a JSON line on stdout: `listening`, `accepted`, `handshake` (version, SNI,
/// client certificate CN), `handshake_failed`, `closed` (bytes echoed). Stopped by PID.
private final class BTLSBackend: @unchecked Sendable {
    let process: Subprocess
    let port: Int

    var address: String { "127.0.0.1:\(port)" }

    init(python: String, script: String, options: [String: Any]) throws {
        let arguments = String(decoding: try JSONSerialization.data(withJSONObject: options), as: UTF8.self)
        process = Subprocess(executable: python, arguments: ["-u", script, arguments])
        try process.start()
        do {
            let line = try process.waitForLine(in: .stdout, timeout: 15, "the backend's listening line") {
                $0.contains("\"listening\"")
            }
            guard let port = Self.parse(line)["port"] as? Int else {
                throw SubprocessError("no port in \(line)")
            }
            self.port = port
        } catch {
            process.terminate(grace: 1)
            throw error
        }
    }

    static func parse(_ line: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]) ?? [:]
    }

    /// Every event so far.
    var events: [[String: Any]] { process.stdoutLines.map(Self.parse) }

    /// Waits for the first event named `name`.
    @discardableResult
    func waitForEvent(_ name: String, timeout: TimeInterval = 10) throws -> [String: Any] {
        Self.parse(
            try process.waitForLine(in: .stdout, timeout: timeout, "backend event '\(name)'") {
                Self.parse($0)["event"] as? String == name
            }
        )
    }

    func outputTail() -> String { process.outputTail(20) }

    func stop() { process.terminate(grace: 2) }

    static let script = #"""
        import json, socket, ssl, sys, threading

        o = json.loads(sys.argv[1])
        mode = o.get("mode", "tls")
        lock = threading.Lock()
        held = []


        def emit(**event):
            with lock:
                sys.stdout.write(json.dumps(event) + "\n")
                sys.stdout.flush()


        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(128)
        local = threading.local()
        ctx = None
        if mode == "tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(o["cert"], o["key"])
            if o.get("client_ca"):
                ctx.load_verify_locations(o["client_ca"])
                ctx.verify_mode = ssl.CERT_REQUIRED

            def on_sni(sslobj, name, context):
                local.sni = name

            ctx.sni_callback = on_sni


        def serve(conn, peer):
            emit(event="accepted", peer=peer[1])
            if mode == "silent":
                held.append(conn)  # never read, never answer
                return
            conn.settimeout(60)
            local.sni = None
            try:
                tls = ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as e:
                emit(event="handshake_failed", peer=peer[1], error=str(e))
                conn.close()
                return
            cn = None
            cert = tls.getpeercert()
            if cert:
                for rdn in cert.get("subject", ()):
                    for key, value in rdn:
                        if key == "commonName":
                            cn = value
            emit(event="handshake", peer=peer[1], version=tls.version(), sni=local.sni, client_cn=cn)
            total = 0
            error = None
            try:
                while True:
                    data = tls.recv(65536)
                    if not data:
                        break
                    tls.sendall(data)
                    total += len(data)
                try:
                    tls.unwrap()
                except (ssl.SSLError, OSError):
                    pass
            except (ssl.SSLError, OSError) as e:
                error = str(e)
            emit(event="closed", peer=peer[1], bytes=total, error=error)
            tls.close()


        emit(event="listening", port=srv.getsockname()[1])
        while True:
            conn, peer = srv.accept()
            threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
        """#
}
