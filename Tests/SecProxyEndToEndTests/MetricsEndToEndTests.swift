import Foundation
import SecProxyCore
import SecProxyTestSupport
import XCTest

/// `/metrics` of the real binary after known traffic, value by value; the same text through `promtool`; and a
/// real Prometheus server scraping it.
final class MetricsEndToEndTests: ProxyTestCase {
    /// Polls the scrape until `condition` holds (counters move right after the log line that reports the event).
    private func scrape(
        _ port: Int, until description: String, timeout: TimeInterval = 10,
        _ condition: (PrometheusScrape) -> Bool
    ) throws -> PrometheusScrape {
        try waitForValue(timeout: timeout, description) { () -> PrometheusScrape? in
            let scrape = try self.scrape(port)
            return condition(scrape) ? scrape : nil
        }
    }

    /// TLS and plain traffic, a failed handshake, a connection refused over a per-client limit, a failed
    /// connect to a dead backend and a reload that fails; then every series is checked against what happened
    /// (and against the connection lines of the log).
    func testScrapeAfterKnownTraffic() throws {
        let echo = try echoBackend()
        let dead = try RefusingPort()
        let launched = Date()
        let config = ProxyConfig(
            server: ["max_connections": 500],
            listeners: [
                tlsListener("web", backends: [echo.address]),
                .plain("raw", backends: [dead.address, echo.address], settings: ["max_connections_per_ip": 1]),
            ]
        )
        let proxy = try startProxyWithAdmin(config)
        let admin = try adminPort(of: proxy)
        let web = try proxy.address(of: "web")
        let raw = try proxy.address(of: "raw")

        // TLS: 9 bytes each way.
        let tls = try python.transfer(.tls(web, serverName: "localhost"), payload: .text("hello tls"))
        XCTAssertTrue(tls.ok, "\(tls)")
        // Not TLS at all on the TLS port: a failed handshake.
        let notTLS = try python.transfer(ClientOptions(port: web.port, tls: false), payload: .text("GET / HTTP/1.0\r\n\r\n"))
        XCTAssertFalse(notTLS.ok && notTLS.receivedText == "GET / HTTP/1.0\r\n\r\n", "\(notTLS)")
        // Plain: the first connect goes to the dead backend (round robin starts there), then to echo.
        let plain = try python.transfer(.plain(raw), payload: .text("abcdefgh"))
        XCTAssertTrue(plain.ok, "\(plain)")
        XCTAssertEqual(plain.receivedText, "abcdefgh")
        // One held connection, and a second from the same address refused over max_connections_per_ip.
        let client = try driver()
        XCTAssertTrue(try client.open("held", .plain(raw)).ok)
        XCTAssertTrue(try client.echo("held", "12345").ok)
        let refused = try client.open("refused", .plain(raw))
        _ = try? client.waitClosed("refused", timeout: 5)
        _ = refused
        try proxy.waitForLogs(count: 1, "the per-IP refusal") { $0["reason"] == "per_ip_limit" }
        // While "held" is open: it is active, and its bytes are counted already (as forwarded, not at its end).
        let during = try scrape(admin, until: "the held connection's bytes") {
            $0.value("secproxy_bytes_total", ["listener": "raw", "direction": "out"]) == 8 + 5
        }
        XCTAssertEqual(during.value("secproxy_connections_active", ["listener": "raw"]), 1)
        XCTAssertEqual(during.value("secproxy_bytes_total", ["listener": "raw", "direction": "in"]), 8 + 5)
        try client.close("held")
        try proxy.waitForConnectionLogs(count: 5, timeout: 15)

        // A reload that fails.
        try temporary.write(
            "secproxy.toml",
            withAdmin(config, "127.0.0.1:\(admin)").replacingOccurrences(of: "mode = \"plain\"", with: "mode = \"plane\"")
        )
        proxy.send(signal: SIGHUP)
        try proxy.waitForMessage("configuration reload failed; keeping the running configuration")

        let scrape = try scrape(admin, until: "every connection counted") {
            $0.sum("secproxy_connections_total") == 5 && $0.value("secproxy_config_reloads_total", ["result": "failure"]) == 1
        }
        let logs = proxy.connectionLogs

        // Connections by listener and reason: exactly the log's, every reason present.
        for listener in ["web", "raw"] {
            for reason in CloseReason.allCases {
                let logged = logs.filter { $0["listener"] == listener && $0["reason"] == reason.rawValue }.count
                XCTAssertEqual(
                    scrape.value("secproxy_connections_total", ["listener": listener, "reason": reason.rawValue]),
                    Double(logged), "\(listener) \(reason)"
                )
            }
        }
        XCTAssertEqual(
            logs.filter { $0["listener"] == "web" }.compactMap { $0["reason"] }.sorted(), ["client_closed", "handshake_failed"]
        )
        XCTAssertEqual(scrape.value("secproxy_connections_total", ["listener": "raw", "reason": "per_ip_limit"]), 1)
        // Bytes: what the clients sent and got back, and what the log says.
        for listener in ["web", "raw"] {
            for (direction, field) in [("in", "bytes_in"), ("out", "bytes_out")] {
                let logged = logs.filter { $0["listener"] == listener }.compactMap { Int($0[field] ?? "") }.reduce(0, +)
                XCTAssertEqual(
                    scrape.value("secproxy_bytes_total", ["listener": listener, "direction": direction]), Double(logged),
                    "\(listener) \(direction)"
                )
            }
        }
        XCTAssertEqual(scrape.value("secproxy_bytes_total", ["listener": "web", "direction": "in"]), 9)
        XCTAssertEqual(scrape.value("secproxy_bytes_total", ["listener": "web", "direction": "out"]), 9)
        XCTAssertEqual(scrape.value("secproxy_bytes_total", ["listener": "raw", "direction": "in"]), 8 + 5)
        XCTAssertEqual(scrape.value("secproxy_bytes_total", ["listener": "raw", "direction": "out"]), 8 + 5)
        // No connection is open any more.
        XCTAssertEqual(scrape.value("secproxy_connections_active", ["listener": "web"]), 0)
        XCTAssertEqual(scrape.value("secproxy_connections_active", ["listener": "raw"]), 0)

        // Handshakes: one TLS 1.3 full handshake; one failure, sorted as not TLS from OpenSSL's reason.
        let version = try XCTUnwrap(tls.version)
        XCTAssertEqual(version, "TLSv1.3")
        XCTAssertEqual(
            scrape.value("secproxy_handshakes_total", ["listener": "web", "tls_version": "TLSv1.3", "resumed": "false"]), 1
        )
        XCTAssertEqual(scrape.sum("secproxy_handshakes_total", matching: ["listener": "web"]), 1)
        XCTAssertTrue(scrape.samples("secproxy_handshakes_total", matching: ["listener": "raw"]).isEmpty)
        let failedLine = try XCTUnwrap(logs.first { $0["reason"] == "handshake_failed" })
        XCTAssertEqual(
            ListenerMetrics.HandshakeFailure(closeReason: .handshakeFailed, detail: failedLine["error"]), .notTLS,
            "OpenSSL said: \(failedLine["error"] ?? "")"
        )
        XCTAssertEqual(scrape.value("secproxy_handshake_failures_total", ["listener": "web", "reason": "not_tls"]), 1)
        XCTAssertEqual(scrape.sum("secproxy_handshake_failures_total", matching: ["listener": "web"]), 1)
        XCTAssertEqual(scrape.value("secproxy_handshake_duration_seconds_count", ["listener": "web"]), 1)
        let sum = try XCTUnwrap(scrape.value("secproxy_handshake_duration_seconds_sum", ["listener": "web"]))
        XCTAssertGreaterThan(sum, 0)
        XCTAssertLessThan(sum, 5)
        XCTAssertEqual(
            scrape.value("secproxy_handshake_duration_seconds_bucket", ["listener": "web", "le": "+Inf"]), 1
        )

        // Backends: the dead one failed once (the plain transfer's first try) but, without health checks,
        // nothing marks a backend down.
        XCTAssertEqual(
            scrape.value("secproxy_backend_connect_failures_total", ["listener": "raw", "backend": dead.address]), 1
        )
        XCTAssertEqual(
            scrape.value("secproxy_backend_connect_failures_total", ["listener": "raw", "backend": echo.address]), 0
        )
        XCTAssertEqual(scrape.value("secproxy_backend_up", ["listener": "raw", "backend": dead.address]), 1)
        XCTAssertEqual(scrape.value("secproxy_backend_up", ["listener": "web", "backend": echo.address]), 1)

        // The certificate, the reload, the process.
        XCTAssertEqual(
            scrape.value("secproxy_certificate_expiry_timestamp_seconds", ["listener": "web", "name": "localhost"]),
            serverCert.notAfter.timeIntervalSince1970
        )
        XCTAssertEqual(scrape.value("secproxy_config_reloads_total", ["result": "failure"]), 1)
        XCTAssertEqual(scrape.value("secproxy_config_reloads_total", ["result": "success"]), 0)
        XCTAssertEqual(scrape.value("secproxy_build_info", ["version": "0.1.0"]), 1)
        let start = try XCTUnwrap(scrape.value("secproxy_process_start_time_seconds"))
        XCTAssertGreaterThanOrEqual(start, launched.timeIntervalSince1970.rounded(.down) - 1)
        XCTAssertLessThanOrEqual(start, Date().timeIntervalSince1970)
        XCTAssertEqual(scrape.value("secproxy_max_connections"), 500)
        let open = try XCTUnwrap(scrape.value("secproxy_open_fds"))
        let counted = Double(try AttackProcessStats.openFileCount(proxy.pid))
        XCTAssertLessThanOrEqual(abs(open - counted), 3, "open_fds \(open), /proc says \(counted)")
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(scrape.value("secproxy_max_fds")), open)

        // The exposition as a whole passes promtool's lint.
        let check = try PrometheusScrape.promtoolCheck(scrape.text)
        XCTAssertEqual(check.exitCode, 0, check.output)
        XCTAssertEqual(check.output, "", "promtool check metrics:\n\(check.output)")
        print("[metrics] sample scrape:\n\(scrape.text)")
    }

    func testBackendUpFollowsHealthChecks() throws {
        let echo = try echoBackend()
        let dead = try RefusingPort()
        let proxy = try startProxyWithAdmin(
            ProxyConfig(listeners: [
                .plain("raw", backends: [dead.address, echo.address])
            ]).withHealthCheck(listener: 0)
        )
        let admin = try adminPort(of: proxy)
        let down = try scrape(admin, until: "the dead backend marked down") {
            $0.value("secproxy_backend_up", ["listener": "raw", "backend": dead.address]) == 0
        }
        XCTAssertEqual(down.value("secproxy_backend_up", ["listener": "raw", "backend": echo.address]), 1)
        try proxy.waitForLogs(count: 1, "the backend down line") { $0["msg"] == "backend down" }
    }

    /// A real Prometheus on loopback scrapes the admin endpoint; `secproxy_connections_total` comes back through
    /// its query API with the count of connections made.
    func testPrometheusServerScrapesTheAdminEndpoint() throws {
        guard let prometheus = Subprocess.which("prometheus") else {
            throw SubprocessError("prometheus is not installed (apt-get install prometheus)")
        }
        let echo = try echoBackend()
        let proxy = try startProxyWithAdmin(ProxyConfig(listeners: [.plain("raw", backends: [echo.address])]))
        let admin = try adminPort(of: proxy)
        let raw = try proxy.address(of: "raw")
        for index in 0..<3 {
            XCTAssertTrue(try python.transfer(.plain(raw), payload: .text("n\(index)")).ok)
        }
        try proxy.waitForConnectionLogs(count: 3)
        let reason = try XCTUnwrap(proxy.connectionLogs.first?["reason"])
        XCTAssertEqual(Set(proxy.connectionLogs.map { $0["reason"] }), [reason])

        let web = try reservedFreePort()
        let yaml = """
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: secproxy
                static_configs:
                  - targets: ["127.0.0.1:\(admin)"]
            """
        let configPath = try temporary.write("prometheus.yml", yaml)
        let server = Subprocess(
            executable: prometheus,
            arguments: [
                "--config.file=\(configPath)", "--storage.tsdb.path=\(temporary.file("tsdb"))",
                "--web.listen-address=127.0.0.1:\(web)", "--log.level=warn",
            ]
        )
        try server.start()
        addTeardownBlock { server.terminate(grace: 5) }
        let query = "secproxy_connections_total{listener=\"raw\",reason=\"\(reason)\"}"
        let encoded = try XCTUnwrap(query.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        let value = try waitForValue(timeout: 60, "Prometheus to have scraped \(query)", state: { server.outputTail() }) {
            () -> String? in
            guard let reply = try? curl(web, "/api/v1/query?query=\(encoded)"), reply.status == 200,
                let json = try JSONSerialization.jsonObject(with: Data(reply.body.utf8)) as? [String: Any],
                let data = json["data"] as? [String: Any], let result = data["result"] as? [[String: Any]],
                let sample = result.first?["value"] as? [Any], sample.count == 2
            else { return nil }
            return sample[1] as? String
        }
        XCTAssertEqual(value, "3")
        let up = try curl(web, "/api/v1/query?query=up")
        XCTAssertTrue(up.body.contains("\"job\":\"secproxy\""), up.body)
        XCTAssertTrue(up.body.contains("\"1\"]"), "the scrape target is up: \(up.body)")
    }
}

extension ProxyConfig {
    /// Adds a fast `[listener.health_check]` (every 200 ms, down after one failure) to listener `index`.
    func withHealthCheck(listener index: Int) -> ProxyConfig {
        var config = self
        config.listeners[index].extraTOML += "[listener.health_check]\ninterval = \"200ms\"\ntimeout = \"500ms\"\nfall = 1\nrise = 1\n"
        return config
    }
}
