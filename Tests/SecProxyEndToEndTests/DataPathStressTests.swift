import Foundation
import SecProxyTestSupport
import XCTest

/// The no-byte-lost guarantee under load (SPEC §3 Forwarding): seeded transfers through a plain and a TLS
/// listener, both sides sending at once, FINs in random order and delay, random reader pacing; every byte
/// checked by hash both ways, and every connection's log line counting exactly what was written.
///
/// `SECPROXY_STRESS_TRANSFERS` (default 40) and `SECPROXY_STRESS_SEED` (default: random, printed) set the run;
/// e.g. `SECPROXY_STRESS_TRANSFERS=1000 swift test --filter DataPathStressTests`.
final class DataPathStressTests: ProxyTestCase {
    func testSeededTransfersLoseNoByteInEitherDirection() throws {
        let environment = ProcessInfo.processInfo.environment
        let transfers = Int(environment["SECPROXY_STRESS_TRANSFERS"] ?? "") ?? 40
        let seed = UInt64(environment["SECPROXY_STRESS_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64(1) << 53)
        print("[stress] seed \(seed), \(transfers) transfers (SECPROXY_STRESS_SEED=\(seed) repeats this run)")
        let timeout = max(240, Double(transfers) * 3)
        let run = try python.stress(seed: seed, transfers: transfers, concurrency: 8, timeout: timeout)
        let backend = "127.0.0.1:\(run.backendPort)"
        let proxy = try startProxy(
            ProxyConfig(listeners: [.plain("plain", backends: [backend]), tlsListener("tls", backends: [backend])])
        )
        let plain = try proxy.address(of: "plain")
        let tls = try proxy.address(of: "tls")
        try run.go(targets: [
            ["name": "plain", "port": plain.port, "tls": false],
            ["name": "tls", "port": tls.port, "tls": true, "server_name": "localhost", "cafile": ca.caCertPath],
        ])
        let (summary, results) = try run.wait()
        let failed = results.filter { !$0.ok }
        print(
            "[stress] seed \(seed): \(summary.transfers) transfers, \(summary.bytesChecked) bytes checked, "
                + "\(summary.bytesLost) lost, \(summary.failures) failed, \(summary.elapsedS) s"
        )
        XCTAssertEqual(summary.transfers, transfers, "seed \(seed)")
        XCTAssertEqual(summary.bytesLost, 0, "seed \(seed)")
        XCTAssertEqual(summary.bytesChecked, summary.bytesExpected, "seed \(seed)")
        XCTAssertTrue(
            failed.isEmpty,
            "seed \(seed): \(failed.count) transfers failed:\n"
                + failed.prefix(10).map(\.description).joined(separator: "\n") + "\n\(proxy.outputTail())"
        )

        // Each connection's line counts what was written, both ways, and ends gracefully. Over many transfers a
        // client port is used again: compare, per port, the lines with the transfers that used it.
        try waitUntil(timeout: 20, "a connection line per transfer", state: { proxy.outputTail(5) }) {
            proxy.connectionLogLines.count >= results.count
        }
        var lines: [Int: [String]] = [:]
        for line in proxy.connectionLogLines {
            let fields = Logfmt.parse(line)
            XCTAssertTrue(
                ["client_closed", "backend_closed"].contains(fields["reason"] ?? ""), "seed \(seed): \(line)"
            )
            let port = Int(fields["client"]?.split(separator: ":").last ?? "") ?? -1
            lines[port, default: []].append(
                "\(fields["listener"] ?? "") in=\(fields["bytes_in"] ?? "") out=\(fields["bytes_out"] ?? "")"
            )
        }
        XCTAssertEqual(lines.values.map(\.count).reduce(0, +), results.count, "one line per connection")
        for (port, transfers) in Dictionary(grouping: results, by: { $0.localPort ?? -1 }) {
            let expected = transfers.map { "\($0.target ?? "") in=\($0.c2bSent) out=\($0.b2cSent)" }.sorted()
            XCTAssertEqual(lines[port]?.sorted(), expected, "seed \(seed), client port \(port)")
        }
    }
}
