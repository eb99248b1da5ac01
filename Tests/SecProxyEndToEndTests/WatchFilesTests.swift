import Foundation
import SecProxyTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `watch_files` (SPEC §2 `[server]`, §3 Reload): with it on, the daemon reloads by itself within 5 s of a change to
/// its config file or a file it names — as on SIGHUP, systemd notifications included — and a half-finished update
/// fails validation, keeps the running configuration and is picked up once it is complete. With it off, nothing
/// reloads.
final class WatchFilesTests: ProxyTestCase {
    /// The SPEC's bound from a change to the reload.
    static let reloadWindow: TimeInterval = 5

    private var watchedProxies: [ProxyProcess] = []
    private var notifySockets: [NotifySocket] = []
    /// The certificate and key the listener is configured with (copies, replaced by rename during the tests).
    private var liveCert: String!
    private var liveKey: String!
    private var certHashScript: String!

    override func setUpWithError() throws {
        try super.setUpWithError()
        liveCert = try temporary.write("live/server.pem", try String(contentsOfFile: serverCert.certPath, encoding: .utf8))
        liveKey = try temporary.write(
            "live/server.key",
            try String(contentsOfFile: serverCert.keyPath, encoding: .utf8),
            mode: 0o600
        )
        certHashScript = try temporary.write("certhash.py", Self.certHashPython)
    }

    override func tearDown() {
        for proxy in watchedProxies { proxy.terminate() }
        watchedProxies = []
        for socket in notifySockets { socket.close() }
        notifySockets = []
        super.tearDown()
    }

    // MARK: - World building

    /// Starts the daemon with one TLS listener on the live certificate in front of an echo backend.
    private func startWatched(
        watchFiles: Bool,
        notify: NotifySocket? = nil
    ) throws -> (ProxyProcess, ListenerAddress, configPath: String) {
        let echo = try echoBackend()
        let config = ProxyConfig(
            server: ["watch_files": .boolean(watchFiles)],
            listeners: [.tls("web", cert: liveCert, key: liveKey, backends: [echo.address])]
        )
        let path = try config.write(to: temporary)
        var environment: [String: String?] = [:]
        if let notify { environment["NOTIFY_SOCKET"] = notify.address }
        let proxy = try ProxyProcess(configPath: path, environment: environment)
        watchedProxies.append(proxy)
        try proxy.start()
        try proxy.waitUntilReady(timeout: 20)
        return (proxy, try proxy.address(of: "web"), path)
    }

    /// Replaces `path` the way certbot and editors do: the new contents go to a temporary file in the same
    /// folder, which is then renamed over `path` (atomic; `path` gets a new inode).
    private func renameOver(_ path: String, contentsOf source: String, mode: Int) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: source))
        let temporaryPath = path + ".new-\(UUID().uuidString.prefix(8))"
        try data.write(to: URL(fileURLWithPath: temporaryPath))
        try setMode(temporaryPath, mode)
        guard rename(temporaryPath, path) == 0 else {
            throw SubprocessError("rename \(temporaryPath) -> \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Installs `issued` as the live certificate (cert first, then key, each renamed over).
    private func installCertificate(_ issued: TestCA.Issued) throws {
        try renameOver(liveCert, contentsOf: issued.certPath, mode: 0o644)
        try renameOver(liveKey, contentsOf: issued.keyPath, mode: 0o600)
    }

    /// SHA-256 of the DER form of the first certificate in the PEM file `path`.
    private func fileCertificateHash(_ path: String) throws -> String {
        try runCertHash(["file", path])
    }

    /// SHA-256 of the DER certificate the server at `address` presents in a new TLS handshake (verified against the
    /// test CA for `localhost`).
    private func servedCertificateHash(_ address: ListenerAddress) throws -> String {
        try runCertHash(["peer", address.host, String(address.port), ca.caCertPath])
    }

    private func runCertHash(_ arguments: [String]) throws -> String {
        let result = try Subprocess.run(python.python, [certHashScript] + arguments, timeout: 15)
        let hash = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.exitCode == 0, hash.count == 64 else {
            throw SubprocessError("certhash.py \(arguments) failed (\(result.status)):\n\(result.stderr)\(result.stdout)")
        }
        return hash
    }

    /// Number of log lines so far whose `msg` is `message`.
    private func count(_ proxy: ProxyProcess, _ message: String) -> Int {
        proxy.events.filter { $0["msg"] == message }.count
    }

    /// Waits until the `msg` `message` was logged more than `already` times, at most `timeout` seconds.
    private func waitForNew(
        _ proxy: ProxyProcess,
        _ message: String,
        after already: Int,
        timeout: TimeInterval = WatchFilesTests.reloadWindow
    ) throws {
        try waitUntil(timeout: timeout, pollInterval: 0.05, "msg=\"\(message)\"", state: { proxy.outputTail(30) }) {
            count(proxy, message) > already
        }
    }

    static let reloaded = "configuration reloaded"
    static let reloadFailed = "configuration reload failed; keeping the running configuration"

    // MARK: - Tests

    func testRenewedCertificateIsPickedUpWithoutSignal() throws {
        let notify = try NotifySocket(path: temporary.file("notify.sock"))
        notifySockets.append(notify)
        let renewed = try ca.issue("renewed", commonName: "renewed.localhost", dnsNames: ["localhost"])
        let (proxy, address, _) = try startWatched(watchFiles: true, notify: notify)
        _ = try notify.waitFor(after: -1, timeout: 10, "start-up READY=1", state: { proxy.outputTail() }) {
            $0.has("READY=1")
        }
        let oldHash = try fileCertificateHash(serverCert.certPath)
        let newHash = try fileCertificateHash(renewed.certPath)
        XCTAssertNotEqual(oldHash, newHash)
        XCTAssertEqual(try servedCertificateHash(address), oldHash, "before the change the old certificate is served")

        let driver = try driver()
        let held = try driver.open("held", .tls(address))
        XCTAssertTrue(held.ok, "\(held)\n\(proxy.outputTail())")
        XCTAssertTrue(try driver.echo("held", "before the renewal").ok)

        let beforeNotify = notify.lastIndex
        XCTAssertEqual(count(proxy, Self.reloaded), 0)
        try installCertificate(renewed)
        let changed = ContinuousClock.now
        try waitForNew(proxy, Self.reloaded, after: 0)
        let took = changed.duration(to: .now)
        XCTAssertLessThanOrEqual(took, .seconds(Self.reloadWindow), "reload after \(took)")
        let trigger = proxy.events.first { $0["msg"] == "file changed; reloading" }
        XCTAssertNotNil(trigger, "the daemon should say which file changed\n\(proxy.outputTail())")
        if let file = trigger?["file"] {
            XCTAssertTrue([liveCert, liveKey].contains(file), "changed file reported as \(file)")
        }

        // Notifications exactly as on SIGHUP.
        let reloading = try notify.waitFor(after: beforeNotify, timeout: 5, "RELOADING=1", state: { proxy.outputTail() }) {
            $0.has("RELOADING=1")
        }
        XCTAssertNotNil(reloading.value("MONOTONIC_USEC").flatMap(UInt64.init), "\(reloading)")
        _ = try notify.waitFor(after: reloading.index, timeout: 5, "READY=1 after RELOADING=1", state: {
            proxy.outputTail()
        }) { $0.has("READY=1") }

        XCTAssertEqual(try servedCertificateHash(address), newHash, "new connections must get the renewed certificate")
        let fresh = try python.transfer(
            ClientOptions(port: address.port, serverName: "localhost", caFile: ca.caCertPath),
            payload: .text("after the renewal"),
            timeout: 10
        )
        XCTAssertTrue(fresh.ok, "\(fresh)\n\(proxy.outputTail())")
        XCTAssertEqual(fresh.receivedText, "after the renewal")

        let echoed = try driver.echo("held", "still here after the renewal")
        XCTAssertTrue(echoed.ok, "the established connection must keep working: \(echoed)\n\(proxy.outputTail())")
        XCTAssertEqual(count(proxy, Self.reloaded), 1, proxy.outputTail())
    }

    func testHalfFinishedUpdateKeepsTheOldCertificateUntilItIsComplete() throws {
        let next = try ca.issue("next", commonName: "next.localhost", dnsNames: ["localhost"])
        let (proxy, address, _) = try startWatched(watchFiles: true)
        let oldHash = try fileCertificateHash(serverCert.certPath)
        let newHash = try fileCertificateHash(next.certPath)
        XCTAssertEqual(try servedCertificateHash(address), oldHash)

        // Step 1: only the key is new, the certificate is still the old one: they do not match.
        try renameOver(liveKey, contentsOf: next.keyPath, mode: 0o600)
        try waitForNew(proxy, Self.reloadFailed, after: 0)
        XCTAssertEqual(count(proxy, Self.reloaded), 0, "a mismatched key must not be taken\n\(proxy.outputTail())")
        XCTAssertTrue(
            proxy.process.stderrLines.contains { $0.contains(liveKey) && $0.contains("error") },
            "the diagnostic should name the key file\n\(proxy.outputTail())"
        )
        XCTAssertEqual(try servedCertificateHash(address), oldHash, "the old certificate stays in force")
        let during = try python.transfer(.tls(address), payload: .text("during the update"), timeout: 10)
        XCTAssertTrue(during.ok, "\(during)\n\(proxy.outputTail())")

        // Step 2: the matching certificate arrives: the update is complete and is taken.
        try renameOver(liveCert, contentsOf: next.certPath, mode: 0o644)
        let changed = ContinuousClock.now
        try waitForNew(proxy, Self.reloaded, after: 0)
        XCTAssertLessThanOrEqual(changed.duration(to: .now), .seconds(Self.reloadWindow))
        XCTAssertEqual(try servedCertificateHash(address), newHash, "the completed update must be served")
        let after = try python.transfer(
            ClientOptions(port: address.port, serverName: "localhost", caFile: ca.caCertPath),
            payload: .text("after the update"),
            timeout: 10
        )
        XCTAssertTrue(after.ok, "\(after)\n\(proxy.outputTail())")
    }

    func testConfigFileChangeReloads() throws {
        let (proxy, address, path) = try startWatched(watchFiles: true)
        let echo = try echoBackend()
        let config = ProxyConfig(
            server: ["watch_files": true],
            listeners: [
                .tls("web", cert: liveCert, key: liveKey, backends: [echo.address]),
                .plain("extra", backends: [echo.address]),
            ]
        )
        let written = try config.write(to: temporary, name: "next.toml")
        try renameOver(path, contentsOf: written, mode: 0o644)
        try waitForNew(proxy, Self.reloaded, after: 0)
        let extra = try waitForValue(timeout: 5, "listener 'extra' bound", state: { proxy.outputTail() }) {
            proxy.listeners["extra"]
        }
        let plain = try python.transfer(.plain(extra), payload: .text("new listener"), timeout: 10)
        XCTAssertTrue(plain.ok, "\(plain)\n\(proxy.outputTail())")
        XCTAssertEqual(plain.receivedText, "new listener")
        XCTAssertEqual(try proxy.port(of: "web"), address.port, "the unchanged listener keeps its socket")
    }

    func testWithoutWatchFilesNothingReloads() throws {
        let other = try ca.issue("other", commonName: "other.localhost", dnsNames: ["localhost"])
        let (proxy, address, _) = try startWatched(watchFiles: false)
        let oldHash = try fileCertificateHash(serverCert.certPath)
        try installCertificate(other)
        // Poll the log for the whole window in which a watching daemon would have reloaded.
        let reloadMessages: Set<String> = [
            "file changed; reloading", "reloading configuration", Self.reloaded, Self.reloadFailed,
        ]
        var reloadedAnyway = false
        do {
            try waitUntil(timeout: Self.reloadWindow, pollInterval: 0.1, "a reload") {
                proxy.events.contains { reloadMessages.contains($0["msg"] ?? "") }
            }
            reloadedAnyway = true
        } catch is DeadlineExceeded {}
        XCTAssertFalse(reloadedAnyway, "watch_files = false must not reload\n\(proxy.outputTail())")
        XCTAssertEqual(try servedCertificateHash(address), oldHash, "the running certificate must stay")
    }

    // MARK: - Script

    /// `certhash.py file PATH` / `certhash.py peer HOST PORT CAFILE`: prints the SHA-256 of a certificate's DER.
    static let certHashPython = #"""
        import hashlib, socket, ssl, sys

        if sys.argv[1] == "file":
            der = ssl.PEM_cert_to_DER_cert(open(sys.argv[2]).read())
        else:
            host, port, cafile = sys.argv[2], int(sys.argv[3]), sys.argv[4]
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(cafile)
            with socket.create_connection((host, port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    der = tls.getpeercert(binary_form=True)
        print(hashlib.sha256(der).hexdigest())
        """#
}
