import Foundation
import SecProxyTestSupport
import XCTest

/// Base for the black-box proxy tests: each test gets a temporary directory, a throwaway CA with an ECDSA server
/// certificate for localhost, a Python client, and bookkeeping so that every daemon, backend and client it starts
/// is ended in tearDown.
class ProxyTestCase: XCTestCase {
    var temporary: TemporaryDirectory!
    var ca: TestCA!
    /// ECDSA P-256 certificate for localhost / 127.0.0.1 / ::1.
    var serverCert: TestCA.Issued!
    var python: PythonClient!
    private var proxies: [ProxyProcess] = []
    private var backends: [TestBackend] = []
    private var drivers: [ClientDriver] = []

    /// The fields every `msg="connection closed"` line carries (SPEC §3).
    static let connectionFields = [
        "listener", "client", "backend", "sni", "alpn", "tls_version", "cipher", "resumed", "bytes_in", "bytes_out",
        "duration_ms", "reason",
    ]

    override func setUpWithError() throws {
        temporary = try TemporaryDirectory(prefix: "secproxy-core")
        ca = try TestCA(directory: temporary.file("certs"))
        serverCert = try ca.serverCertificate("server")
        python = try PythonClient(directory: temporary)
    }

    override func tearDown() {
        for driver in drivers { driver.quit() }
        for proxy in proxies { proxy.terminate() }
        for backend in backends { backend.stop() }
        drivers = []
        proxies = []
        backends = []
        temporary?.cleanup()
        temporary = nil
    }

    // MARK: - World building

    /// Starts an echo backend (stopped in tearDown).
    func echoBackend(replyAfterFIN: Bool = false) throws -> EchoServer {
        let server = try EchoServer(replyAfterFIN: replyAfterFIN)
        backends.append(server)
        return server
    }

    /// Starts a sink backend (stopped in tearDown).
    func sinkBackend(closeOnFIN: Bool = true) throws -> SinkServer {
        let server = try SinkServer(closeOnFIN: closeOnFIN)
        backends.append(server)
        return server
    }

    /// Starts an interactive client driver (ended in tearDown).
    func driver() throws -> ClientDriver {
        let made = try python.driver()
        drivers.append(made)
        return made
    }

    /// A TLS listener on 127.0.0.1:0 with the test's server certificate.
    func tlsListener(
        _ name: String = "web",
        backends: [String],
        cert: TestCA.Issued? = nil,
        settings: [String: TOMLValue] = [:],
        tlsSettings: [String: TOMLValue] = [:]
    ) -> ProxyConfig.Listener {
        let cert = cert ?? serverCert!
        return .tls(
            name,
            cert: cert.certPath,
            key: cert.keyPath,
            backends: backends,
            settings: settings,
            tlsSettings: tlsSettings
        )
    }

    /// Writes `config`, starts the daemon and waits for `msg=ready` (ended in tearDown).
    func startProxy(_ config: ProxyConfig) throws -> ProxyProcess {
        let path = try config.write(to: temporary)
        let proxy = try ProxyProcess(configPath: path)
        proxies.append(proxy)
        try proxy.start()
        try proxy.waitUntilReady(timeout: 20)
        return proxy
    }

    /// Starts a daemon with one listener and returns it with the listener's bound address.
    func startProxy(
        _ listener: ProxyConfig.Listener,
        server: [String: TOMLValue] = [:],
        defaults: [String: TOMLValue] = [:]
    ) throws -> (ProxyProcess, ListenerAddress) {
        let proxy = try startProxy(ProxyConfig(server: server, defaults: defaults, listeners: [listener]))
        return (proxy, try proxy.address(of: listener.name))
    }

    // MARK: - Assertions

    /// Checks that `line` (a raw stderr line) carries every SPEC §3 field, present even when empty.
    func assertHasAllConnectionFields(_ line: String, file: StaticString = #filePath, line testLine: UInt = #line) {
        let keys = Set(Logfmt.keys(line))
        for field in Self.connectionFields {
            XCTAssertTrue(keys.contains(field), "field '\(field)' missing from: \(line)", file: file, line: testLine)
        }
        let fields = Logfmt.parse(line)
        XCTAssertNotNil(fields["ts"], line, file: file, line: testLine)
        XCTAssertNotNil(fields["level"], line, file: file, line: testLine)
        XCTAssertNotNil(
            Int(fields["duration_ms"] ?? ""),
            "duration_ms not an integer: \(line)",
            file: file,
            line: testLine
        )
        XCTAssertNotNil(Int(fields["bytes_in"] ?? ""), "bytes_in not an integer: \(line)", file: file, line: testLine)
        XCTAssertNotNil(Int(fields["bytes_out"] ?? ""), "bytes_out not an integer: \(line)", file: file, line: testLine)
        let client = fields["client"] ?? ""
        XCTAssertNotNil(
            client.range(of: #"^(127\.0\.0\.1|\[::1\]):[0-9]+$"#, options: .regularExpression),
            "client is not IP:PORT: \(line)",
            file: file,
            line: testLine
        )
    }

    /// Waits for exactly one connection line for the client whose local port is `port`, and returns it raw.
    func connectionLine(
        of proxy: ProxyProcess,
        clientPort port: Int,
        timeout: TimeInterval = 10,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws -> String {
        let suffix = ":\(port)"
        try waitUntil(timeout: timeout, "a connection line for client port \(port)", state: { proxy.outputTail() }) {
            proxy.connectionLogLines.contains { (ProxyProcess.parseLogLine($0)["client"] ?? "").hasSuffix(suffix) }
        }
        let lines = proxy.connectionLogLines.filter {
            (ProxyProcess.parseLogLine($0)["client"] ?? "").hasSuffix(suffix)
        }
        XCTAssertEqual(
            lines.count,
            1,
            "one line per connection expected:\n\(lines.joined(separator: "\n"))",
            file: file,
            line: line
        )
        return lines[0]
    }
}
