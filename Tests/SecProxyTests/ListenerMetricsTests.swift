import SecProxyCore
import SecProxyTestSupport
import XCTest

@testable import SecProxy

/// `ListenerMetrics` (the data path's handles) counted into the daemon's Prometheus registry and read back
/// from its text exposition: each method moves exactly its series.
final class ListenerMetricsTests: XCTestCase {
    private func web(_ metrics: ProxyMetrics, backends: [String] = ["127.0.0.1:8080", "unix:/run/app.sock"])
        -> ListenerMetrics
    {
        ListenerMetrics(listener: "web", tls: true, backends: backends, factory: metrics.factory)
    }

    func testEveryCallMovesItsOwnSeries() throws {
        let metrics = ProxyMetrics()
        let listener = web(metrics)
        listener.connectionOpened()
        listener.connectionOpened()
        listener.connectionOpened()
        listener.connectionClosed(reason: .clientClosed)
        listener.connectionClosed(reason: .idleTimeout)
        listener.bytesForwarded(in: 100)
        listener.bytesForwarded(in: 23)
        listener.bytesForwarded(out: 40)
        listener.handshakeCompleted(version: "TLSv1.3", resumed: false, seconds: 0.004)
        listener.handshakeCompleted(version: "TLSv1.2", resumed: true, seconds: 0.0007)
        listener.handshakeFailed(reason: .notTLS)
        listener.handshakeFailed(reason: .timeout)
        listener.handshakeFailed(reason: .timeout)
        listener.backendConnectFailed(backend: "unix:/run/app.sock")

        let scrape = try scrapeMetrics(metrics)
        let name = ["listener": "web"]
        XCTAssertEqual(scrape.value("secproxy_connections_active", name), 1)
        XCTAssertEqual(scrape.value("secproxy_connections_total", ["listener": "web", "reason": "client_closed"]), 1)
        XCTAssertEqual(scrape.value("secproxy_connections_total", ["listener": "web", "reason": "idle_timeout"]), 1)
        // Every reason exists from the start, at 0.
        XCTAssertEqual(scrape.samples("secproxy_connections_total", matching: name).count, CloseReason.allCases.count)
        XCTAssertEqual(scrape.sum("secproxy_connections_total", matching: name), 2)
        XCTAssertEqual(scrape.value("secproxy_bytes_total", ["listener": "web", "direction": "in"]), 123)
        XCTAssertEqual(scrape.value("secproxy_bytes_total", ["listener": "web", "direction": "out"]), 40)
        func handshakes(_ version: String, _ resumed: String) -> Double? {
            scrape.value("secproxy_handshakes_total", ["listener": "web", "tls_version": version, "resumed": resumed])
        }
        XCTAssertEqual(handshakes("TLSv1.3", "false"), 1)
        XCTAssertEqual(handshakes("TLSv1.2", "true"), 1)
        XCTAssertEqual(handshakes("TLSv1.3", "true"), 0)
        XCTAssertEqual(handshakes("TLSv1.2", "false"), 0)
        XCTAssertEqual(scrape.value("secproxy_handshake_failures_total", ["listener": "web", "reason": "not_tls"]), 1)
        XCTAssertEqual(scrape.value("secproxy_handshake_failures_total", ["listener": "web", "reason": "timeout"]), 2)
        XCTAssertEqual(
            scrape.samples("secproxy_handshake_failures_total", matching: name).count,
            ListenerMetrics.HandshakeFailure.allCases.count
        )
        // The histogram: 0.7 ms and 4 ms, in buckets from 1 ms.
        func bucket(_ le: String) -> Double? {
            scrape.value("secproxy_handshake_duration_seconds_bucket", ["listener": "web", "le": le])
        }
        XCTAssertEqual(bucket("0.001"), 1)
        XCTAssertEqual(bucket("0.0025"), 1)
        XCTAssertEqual(bucket("0.005"), 2)
        XCTAssertEqual(bucket("10.0"), 2)
        XCTAssertEqual(bucket("+Inf"), 2)
        XCTAssertEqual(scrape.value("secproxy_handshake_duration_seconds_count", name), 2)
        XCTAssertEqual(try XCTUnwrap(scrape.value("secproxy_handshake_duration_seconds_sum", name)), 0.0047, accuracy: 1e-9)
        XCTAssertEqual(
            scrape.samples("secproxy_handshake_duration_seconds_bucket", matching: name).map { $0.labels["le"]! }.count,
            MetricCatalog.handshakeBuckets.count + 1
        )
        XCTAssertEqual(
            scrape.value("secproxy_backend_connect_failures_total", ["listener": "web", "backend": "unix:/run/app.sock"]), 1
        )
        XCTAssertEqual(
            scrape.value("secproxy_backend_connect_failures_total", ["listener": "web", "backend": "127.0.0.1:8080"]), 0
        )
        let check = try promtoolCheck(scrape.text)
        XCTAssertEqual(check.exitCode, 0, check.output)
        XCTAssertEqual(check.output, "", "promtool has remarks:\n\(check.output)\n\(scrape.text)")
    }

    func testAReloadsHandlesContinueTheSameSeries() throws {
        let metrics = ProxyMetrics()
        let before = web(metrics, backends: ["127.0.0.1:8080"])
        before.connectionOpened()
        before.bytesForwarded(in: 10)
        // After a reload the listener has other backends; the connection from before still reports.
        let after = web(metrics, backends: ["127.0.0.1:9090"])
        after.bytesForwarded(in: 5)
        after.connectionOpened()
        before.connectionClosed(reason: .clientClosed)
        before.backendConnectFailed(backend: "127.0.0.1:8080")
        after.backendConnectFailed(backend: "127.0.0.1:8080")

        let scrape = try scrapeMetrics(metrics)
        XCTAssertEqual(scrape.value("secproxy_bytes_total", ["listener": "web", "direction": "in"]), 15)
        XCTAssertEqual(scrape.value("secproxy_connections_active", ["listener": "web"]), 1)
        XCTAssertEqual(
            scrape.value("secproxy_backend_connect_failures_total", ["listener": "web", "backend": "127.0.0.1:8080"]), 2
        )
    }

    func testPlainListenerHasNoHandshakeSeries() throws {
        let metrics = ProxyMetrics()
        let raw = ListenerMetrics(listener: "raw", tls: false, backends: ["127.0.0.1:1"], factory: metrics.factory)
        raw.handshakeCompleted(version: "TLSv1.3", resumed: false, seconds: 0.01)
        raw.handshakeFailed(reason: .timeout)
        raw.connectionOpened()
        raw.bytesForwarded(in: 3)
        raw.connectionClosed(reason: .backendUnavailable)
        let scrape = try scrapeMetrics(metrics)
        XCTAssertTrue(scrape.samples("secproxy_handshakes_total", matching: ["listener": "raw"]).isEmpty, scrape.text)
        XCTAssertTrue(scrape.samples("secproxy_handshake_failures_total", matching: ["listener": "raw"]).isEmpty)
        XCTAssertTrue(scrape.samples("secproxy_handshake_duration_seconds_count", matching: ["listener": "raw"]).isEmpty)
        XCTAssertEqual(
            scrape.value("secproxy_connections_total", ["listener": "raw", "reason": "backend_unavailable"]), 1
        )
        XCTAssertEqual(scrape.value("secproxy_bytes_total", ["listener": "raw", "direction": "in"]), 3)
        XCTAssertEqual(scrape.value("secproxy_connections_active", ["listener": "raw"]), 0, "opened, then closed")
    }

    func testNoopTakesEveryCall() {
        let noop = ListenerMetrics.noop
        noop.connectionOpened()
        noop.connectionClosed(reason: .shutdown)
        noop.bytesForwarded(in: 1)
        noop.bytesForwarded(out: 1)
        noop.handshakeCompleted(version: "TLSv1.3", resumed: true, seconds: 1)
        noop.handshakeFailed(reason: .other)
        noop.backendConnectFailed(backend: "x")
        XCTAssertEqual(noop.listener, "")
    }

    func testHandshakeFailureReasonsFromTheirCloseReasonAndTLSDetail() {
        typealias Failure = ListenerMetrics.HandshakeFailure
        XCTAssertEqual(Failure(closeReason: .handshakeTimeout, detail: nil), .timeout)
        for reason in CloseReason.allCases where reason != .handshakeFailed && reason != .handshakeTimeout {
            XCTAssertNil(Failure(closeReason: reason, detail: "handshake eof"), "\(reason)")
        }
        let cases: [(String, Failure)] = [
            ("handshake eof", .eof),
            ("wrong version number", .notTLS),
            ("http request", .notTLS),
            ("packet length too long", .notTLS),
            ("unsupported protocol", .protocolVersion),
            ("tlsv1 alert protocol version", .protocolVersion),
            ("no shared cipher", .noSharedCipher),
            ("no suitable signature algorithm", .noSharedCipher),
            ("unrecognized name", .unrecognizedName),
            ("peer did not return a certificate", .clientCertificate),
            ("certificate verify failed", .clientCertificate),
            ("client certificate not allowed", .clientCertificate),
            ("tlsv1 alert unknown ca", .peerAlert),
            ("sslv3 alert certificate unknown", .peerAlert),
            ("something OpenSSL adds next year", .other),
        ]
        for (detail, expected) in cases {
            XCTAssertEqual(Failure(closeReason: .handshakeFailed, detail: detail), expected, detail)
        }
        XCTAssertEqual(Failure(closeReason: .handshakeFailed, detail: nil), .other)
    }
}
