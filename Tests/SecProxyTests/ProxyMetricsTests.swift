import Foundation
import SecProxyConfig
import SecProxyTestSupport
import XCTest

@testable import SecProxy

/// The process-level series the daemon sets itself, and the exposition as a whole.
final class ProxyMetricsTests: XCTestCase {
    private var temporary: TemporaryDirectory!
    private var ca: TestCA!

    override func setUpWithError() throws {
        temporary = try TemporaryDirectory(prefix: "secproxy-metrics")
        ca = try TestCA(directory: temporary.file("certs"))
    }

    override func tearDown() {
        temporary?.cleanup()
    }

    /// Prepares a config with TLS listener `web` (a default certificate for localhost, an SNI one for
    /// api.example.org) and plain listener `raw`.
    private func prepared(maxConnections: Int = 1234, sni: Bool = true) throws -> (PreparedConfiguration, [TestCA.Issued]) {
        let main = try ca.serverCertificate("main")
        let api = try ca.issue("api", dnsNames: ["api.example.org"], notAfter: Date().addingTimeInterval(40 * 86400))
        let extra =
            sni
            ? "[[listener.tls.sni]]\ncert = \(tomlQuoted(api.certPath))\nkey = \(tomlQuoted(api.keyPath))\n" : ""
        var config = ProxyConfig(
            server: ["max_connections": .integer(maxConnections)],
            listeners: [
                .tls("web", cert: main.certPath, key: main.keyPath, backends: ["127.0.0.1:8080", "127.0.0.1:8081"]),
                .plain("raw", backends: ["127.0.0.1:9000"]),
            ]
        )
        config.listeners[0].extraTOML = extra
        let path = try config.write(to: temporary)
        let result = Preparation.prepare(path: path)
        let prepared = try XCTUnwrap(result.prepared, "\(result.diagnostics)")
        return (prepared, sni ? [main, api] : [main])
    }

    func testProcessSeries() throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000.75)
        let metrics = ProxyMetrics(version: "9.8.7", startTime: start)
        let scrape = try scrapeMetrics(metrics)
        XCTAssertEqual(scrape.value("secproxy_build_info", ["version": "9.8.7"]), 1)
        XCTAssertEqual(scrape.value("secproxy_process_start_time_seconds"), 1_800_000_000)
        let open = try XCTUnwrap(scrape.value("secproxy_open_fds"))
        let max = try XCTUnwrap(scrape.value("secproxy_max_fds"))
        var limit = rlimit()
        XCTAssertEqual(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit), 0)
        XCTAssertEqual(max, Double(limit.rlim_cur))
        XCTAssertGreaterThan(open, 2, "stdin, stdout, stderr at least")
        XCTAssertLessThanOrEqual(open, max)
        // Other tests in this process (event loops, servers closing) open and close descriptors meanwhile, so
        // each scrape is compared with counts of /proc/self/fd taken just before and just after it.
        func scrapedDescriptors() throws -> (value: Double, low: Int, high: Int) {
            let before = try XCTUnwrap(Self.descriptorsInProc())
            let value = try XCTUnwrap(try scrapeMetrics(metrics).value("secproxy_open_fds"))
            let after = try XCTUnwrap(Self.descriptorsInProc())
            return (value, Swift.min(before, after), Swift.max(before, after))
        }
        let first = try scrapedDescriptors()
        XCTAssertTrue((first.low...first.high).contains(Int(first.value)), "\(first)")
        // 64 descriptors more are seen at the next scrape.
        var pipes = [Int32](repeating: -1, count: 64)
        pipes.withUnsafeMutableBufferPointer { buffer in
            for index in stride(from: 0, to: buffer.count, by: 2) {
                XCTAssertEqual(pipe(buffer.baseAddress! + index), 0)
            }
        }
        defer { for fd in pipes where fd >= 0 { close(fd) } }
        XCTAssertFalse(pipes.contains(-1))
        let second = try scrapedDescriptors()
        XCTAssertTrue((second.low...second.high).contains(Int(second.value)), "\(second)")
        XCTAssertGreaterThan(second.value, 64 + 2, "the 64 new descriptors and stdio: \(second)")
        XCTAssertEqual(scrape.value("secproxy_config_reloads_total", ["result": "success"]), 0)
        XCTAssertEqual(scrape.value("secproxy_config_reloads_total", ["result": "failure"]), 0)
        metrics.reloaded(success: false)
        metrics.reloaded(success: true)
        metrics.reloaded(success: true)
        let after = try scrapeMetrics(metrics)
        XCTAssertEqual(after.value("secproxy_config_reloads_total", ["result": "success"]), 2)
        XCTAssertEqual(after.value("secproxy_config_reloads_total", ["result": "failure"]), 1)
    }

    /// Entries of `/proc/self/fd` other than the one reading it, counted independently of `ProxyMetrics`.
    static func descriptorsInProc() -> Int? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return nil }
        return names.count - 1
    }

    func testConfigurationSeriesFollowTheConfigurationInForce() throws {
        let metrics = ProxyMetrics()
        let (first, certificates) = try prepared(maxConnections: 1234)
        metrics.configurationApplied(first)
        var scrape = try scrapeMetrics(metrics)
        XCTAssertEqual(scrape.value("secproxy_max_connections"), 1234)
        for certificate in certificates {
            XCTAssertEqual(
                scrape.value(
                    "secproxy_certificate_expiry_timestamp_seconds",
                    ["listener": "web", "name": certificate.dnsNames[0]]
                ),
                certificate.notAfter.timeIntervalSince1970.rounded(.down),
                certificate.commonName
            )
        }
        XCTAssertEqual(scrape.samples("secproxy_certificate_expiry_timestamp_seconds").count, 2)

        // A reload drops the SNI certificate and changes the limit: its series goes.
        let (second, _) = try prepared(maxConnections: 99, sni: false)
        metrics.configurationApplied(second)
        scrape = try scrapeMetrics(metrics)
        XCTAssertEqual(scrape.value("secproxy_max_connections"), 99)
        XCTAssertEqual(
            scrape.samples("secproxy_certificate_expiry_timestamp_seconds").map { $0.labels["name"] }, ["localhost"]
        )
    }

    func testBackendUpSeries() throws {
        let metrics = ProxyMetrics()
        metrics.resetBackends(listener: "web", backends: ["127.0.0.1:8080", "127.0.0.1:8081"])
        metrics.setBackend(listener: "web", backend: "127.0.0.1:8081", up: false)
        var scrape = try scrapeMetrics(metrics)
        XCTAssertEqual(scrape.value("secproxy_backend_up", ["listener": "web", "backend": "127.0.0.1:8080"]), 1)
        XCTAssertEqual(scrape.value("secproxy_backend_up", ["listener": "web", "backend": "127.0.0.1:8081"]), 0)
        // A new runtime: its backends start up; one that is gone loses its series.
        metrics.resetBackends(listener: "web", backends: ["127.0.0.1:8081", "127.0.0.1:8082"])
        scrape = try scrapeMetrics(metrics)
        XCTAssertNil(scrape.value("secproxy_backend_up", ["listener": "web", "backend": "127.0.0.1:8080"]))
        XCTAssertEqual(scrape.value("secproxy_backend_up", ["listener": "web", "backend": "127.0.0.1:8081"]), 1)
        XCTAssertEqual(scrape.value("secproxy_backend_up", ["listener": "web", "backend": "127.0.0.1:8082"]), 1)
        // A transition for a backend the listener no longer has makes no series.
        metrics.setBackend(listener: "web", backend: "127.0.0.1:8080", up: false)
        metrics.removeBackends(listener: "web")
        XCTAssertTrue(try scrapeMetrics(metrics).samples("secproxy_backend_up").isEmpty)
    }

    /// Every catalogued metric is exported with its `# HELP` and the right `# TYPE`, and the whole exposition
    /// passes `promtool check metrics` without a remark.
    func testEveryMetricHasHelpAndTypeAndPromtoolAgrees() throws {
        let metrics = ProxyMetrics()
        let (prepared, _) = try prepared()
        metrics.configurationApplied(prepared)
        for listener in prepared.configuration.listeners {
            _ = metrics.listenerMetrics(for: listener)
            metrics.resetBackends(listener: listener.name, backends: listener.backends.map(\.text))
        }
        let scrape = try scrapeMetrics(metrics)
        let types: [String: String] = [
            "secproxy_connections_active": "gauge", "secproxy_connections_total": "counter",
            "secproxy_handshakes_total": "counter", "secproxy_handshake_failures_total": "counter",
            "secproxy_handshake_duration_seconds": "histogram", "secproxy_bytes_total": "counter",
            "secproxy_backend_up": "gauge", "secproxy_backend_connect_failures_total": "counter",
            "secproxy_certificate_expiry_timestamp_seconds": "gauge", "secproxy_config_reloads_total": "counter",
            "secproxy_build_info": "gauge", "secproxy_process_start_time_seconds": "gauge",
            "secproxy_open_fds": "gauge", "secproxy_max_fds": "gauge", "secproxy_max_connections": "gauge",
        ]
        XCTAssertEqual(Set(MetricCatalog.entries.map(\.name)), Set(types.keys))
        for (name, type) in types {
            XCTAssertEqual(scrape.types[name], type, name)
            XCTAssertFalse((scrape.help[name] ?? "").isEmpty, "\(name) has no help text")
        }
        // The SPEC §3 labels, exactly.
        let labels: [String: Set<String>] = [
            "secproxy_connections_active": ["listener"], "secproxy_connections_total": ["listener", "reason"],
            "secproxy_handshakes_total": ["listener", "tls_version", "resumed"],
            "secproxy_handshake_failures_total": ["listener", "reason"],
            "secproxy_handshake_duration_seconds_count": ["listener"], "secproxy_bytes_total": ["listener", "direction"],
            "secproxy_backend_up": ["listener", "backend"],
            "secproxy_backend_connect_failures_total": ["listener", "backend"],
            "secproxy_certificate_expiry_timestamp_seconds": ["listener", "name"],
            "secproxy_config_reloads_total": ["result"], "secproxy_build_info": ["version"],
        ]
        for (name, expected) in labels {
            let samples = scrape.samples(name)
            XCTAssertFalse(samples.isEmpty, name)
            for sample in samples {
                XCTAssertEqual(Set(sample.labels.keys), expected, "\(name): \(sample.labels)")
            }
        }
        let check = try promtoolCheck(scrape.text)
        XCTAssertEqual(check.exitCode, 0, check.output)
        XCTAssertEqual(check.output, "", "promtool has remarks:\n\(check.output)")
    }
}
