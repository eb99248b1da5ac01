import Foundation
import SecProxyTestSupport
import XCTest

/// The systemd watchdog is fed from its own task: a reload that takes seconds (large CRLs to parse and load)
/// does not hold back `WATCHDOG=1`, which would get the daemon killed by systemd.
final class WatchdogDuringReloadTests: ProxyTestCase {
    private var notifySockets: [NotifySocket] = []

    override func tearDown() {
        for socket in notifySockets { socket.close() }
        notifySockets = []
        super.tearDown()
    }

    /// A CRL of the test CA revoking `count` serials, made by `openssl ca -gencrl` from a database written here.
    private func largeCRL(revoking count: Int) throws -> String {
        let folder = try temporary.makeDirectory("crl")
        var index = ""
        index.reserveCapacity(count * 48)
        for serial in 0..<count {
            index += "R\t301231235959Z\t250101000000Z\t\(String(0x10_0000 + serial, radix: 16, uppercase: true))\tunknown\t/CN=r\n"
        }
        try temporary.write("crl/index.txt", index)
        try temporary.write("crl/index.txt.attr", "unique_subject = no\n")
        let configuration = try temporary.write(
            "crl/crl.cnf",
            """
            [ca]
            default_ca = crl
            [crl]
            database = \(folder)/index.txt
            certificate = \(ca.caCertPath)
            private_key = \(ca.caKeyPath)
            default_md = sha256
            default_crl_days = 30
            """
        )
        let path = folder + "/large.crl"
        let openssl = try XCTUnwrap(Subprocess.which("openssl"))
        let run = try Subprocess.run(openssl, ["ca", "-gencrl", "-config", configuration, "-out", path], timeout: 120)
        XCTAssertEqual(run.exitCode, 0, run.stderr)
        return path
    }

    func testWatchdogKeepsPingingThroughASlowReload() throws {
        let echo = try echoBackend()
        let crl = try largeCRL(revoking: 400_000)
        // Four listeners, each with its own copy of the CRL (a file named twice is read and parsed once): a
        // reload parses and loads each (about a second in all).
        let listeners = try (1...4).map { index in
            let copy = temporary.file("crl/large-\(index).crl")
            try FileManager.default.copyItem(atPath: crl, toPath: copy)
            return tlsListener(
                "mtls\(index)", backends: [echo.address],
                tlsSettings: ["client_ca": .string(ca.caCertPath), "client_crl": .string(copy)]
            )
        }
        let notify = try NotifySocket(path: temporary.file("notify.sock"))
        notifySockets.append(notify)
        let path = try ProxyConfig(listeners: listeners).write(to: temporary)
        // WATCHDOG=1 every 50 ms.
        let interval: Duration = .milliseconds(50)
        let proxy = try ProxyProcess(configPath: path, environment: ["NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "100000"])
        try proxy.start()
        addTeardownBlock { proxy.terminate() }
        let ready = try notify.waitFor(after: -1, timeout: 60, "READY=1", state: { proxy.outputTail() }) { $0.has("READY=1") }
        _ = try notify.waitFor(after: ready.index, timeout: 5, "WATCHDOG=1") { $0.has("WATCHDOG=1") }

        let before = notify.lastIndex
        proxy.send(signal: SIGHUP)
        let reloading = try notify.waitFor(after: before, timeout: 10, "RELOADING=1") { $0.has("RELOADING=1") }
        let reloaded = try notify.waitFor(after: reloading.index, timeout: 60, "READY=1 after the reload") {
            $0.has("READY=1")
        }
        try proxy.waitForMessage("configuration reloaded", timeout: 10)
        let took = reloading.received.duration(to: reloaded.received)
        // About 1 s on an idle machine, more under load; a watchdog held back by it would show a gap that long.
        XCTAssertGreaterThan(
            took, .milliseconds(600),
            "the reload took only \(took): too fast to show anything about the watchdog (make the CRL larger)"
        )
        // Pings all through the reload, on their beat.
        let pings = notify.datagrams.filter { $0.has("WATCHDOG=1") }.map(\.received)
        let during = pings.filter { $0 > reloading.received && $0 < reloaded.received }
        let expected = Double(took.components.seconds) / 0.05 + Double(took.components.attoseconds) / 5e16
        XCTAssertGreaterThan(Double(during.count), expected / 2, "\(during.count) pings during a reload of \(took)")
        let window = pings.filter { $0 >= reloading.received - interval * 4 && $0 <= reloaded.received + interval * 4 }
        let longest = zip(window, window.dropFirst()).map { $0.duration(to: $1) }.max() ?? took
        XCTAssertLessThan(longest, .milliseconds(400), "longest gap between pings during the reload: \(longest)")
        XCTAssertLessThan(longest, took / 2, "longest gap between pings \(longest) during a reload of \(took)")
        print("[watchdog] reload took \(took); \(during.count) pings during it; longest gap \(longest)")
    }
}
