import Foundation
import XCTest

@testable import SecProxyConfig

final class ConfigurationLoaderTests: XCTestCase {
    /// The folder relative paths are resolved against in these tests.
    private let directory = "/etc/secproxy"

    private func load(_ text: String, path: String = "test.toml") -> ConfigurationLoader.Result {
        ConfigurationLoader.load(text: text, path: path, directory: directory)
    }

    // MARK: - A full, valid configuration

    /// Every key of SPEC §2's example, plus a second listener that overrides `[defaults]`.
    private let fullConfiguration = #"""
        [server]
        workers = 4
        max_connections = 20000
        drain_timeout = "30s"
        log_format = "json"
        log_level = "notice"
        watch_files = true

        [admin]
        listen = "127.0.0.1:9901"

        [defaults]
        handshake_timeout = "10s"
        idle_timeout = "5m"
        half_close_timeout = "30s"
        connect_timeout = "5s"
        max_connections_per_ip = 100
        max_new_connections_per_ip = 20
        buffer_size = "64KiB"

        [[listener]]
        name = "web"
        listen = "0.0.0.0:8443"
        mode = "tls"
        backends = ["127.0.0.1:8080", "127.0.0.1:8081", "unix:/run/app.sock"]
        balance = "least_connections"
        proxy_protocol = "v2"
        accept_proxy_protocol = true
        proxy_protocol_trusted = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]

        [listener.tls]
        cert = "certs/example.com.pem"
        key = "./certs/../certs/example.com.key"
        min_version = "1.3"
        max_version = "1.3"
        ciphers = "ECDHE+AESGCM"
        ciphersuites = "TLS_AES_256_GCM_SHA384"
        curves = "X25519"
        alpn = ["h2", "http/1.1"]
        session_tickets = true
        ticket_key_file = "/var/lib/secproxy/tickets.key"
        client_ca = "ca/clients.pem"
        client_auth = "optional"
        client_crl = "ca/clients.crl"
        allowed_clients = ["cn:billing", "dns:Worker.Internal", "uri:spiffe://example.org/ns/prod/sa/api"]
        strict_sni = true
        ocsp_response = "ocsp.der"

        [[listener.tls.sni]]
        cert = "certs/api.example.org.pem"
        key = "certs/api.example.org.key"
        names = ["API.example.org", "*.example.org"]

        [[listener.tls.sni]]
        cert = "certs/other.pem"
        key = "certs/other.key"

        [[listener.route]]
        sni = "api.example.org"
        backends = ["127.0.0.1:9000"]

        [[listener.route]]
        sni = "*.Example.org"
        backends = ["127.0.0.1:8080", "[::1]:9001"]

        [listener.backend_tls]
        ca = "/etc/ssl/certs/ca-certificates.crt"
        server_name = "app.internal"
        cert = "backend/client.pem"
        key = "backend/client.key"

        [listener.health_check]
        interval = "1.5s"
        timeout = "250ms"
        fall = 5
        rise = 1

        [[listener]]
        name = "plain-db"
        listen = "[::1]:15432"
        mode = "plain"
        backends = ["db.internal:5432"]
        idle_timeout = "1h"
        buffer_size = "1MiB"
        max_connections_per_ip = 0
        """#

    func testFullConfigurationLoadsWithEveryValue() throws {
        let result = load(fullConfiguration)
        XCTAssertEqual(result.diagnostics.map(\.description), [])
        let configuration = try XCTUnwrap(result.configuration)
        XCTAssertEqual(configuration.path, "test.toml")
        XCTAssertEqual(configuration.directory, directory)

        let server = configuration.server
        XCTAssertEqual(server.workers, 4)
        XCTAssertEqual(server.maxConnections, 20000)
        XCTAssertEqual(server.drainTimeout, .seconds(30))
        XCTAssertEqual(server.logFormat, .json)
        XCTAssertEqual(server.logLevel, .notice)
        XCTAssertTrue(server.watchFiles)
        XCTAssertEqual(
            configuration.admin?.listen,
            SocketAddressSpec(host: "127.0.0.1", port: 9901, text: "127.0.0.1:9901")
        )

        XCTAssertEqual(configuration.listeners.count, 2)
        let web = configuration.listeners[0]
        XCTAssertEqual(web.name, "web")
        XCTAssertEqual(web.location, SourceLocation(line: 21, column: 1))
        XCTAssertEqual(web.listen.value, SocketAddressSpec(host: "0.0.0.0", port: 8443, text: "0.0.0.0:8443"))
        XCTAssertEqual(web.listen.location, SourceLocation(line: 23, column: 1))
        XCTAssertEqual(web.mode, .tls)
        XCTAssertEqual(
            web.backends.map(\.kind),
            [.inet(host: "127.0.0.1", port: 8080), .inet(host: "127.0.0.1", port: 8081), .unix(path: "/run/app.sock")]
        )
        XCTAssertEqual(web.backends.map(\.text), ["127.0.0.1:8080", "127.0.0.1:8081", "unix:/run/app.sock"])
        XCTAssertEqual(web.balance, .leastConnections)
        XCTAssertEqual(web.proxyProtocol, .v2)
        XCTAssertTrue(web.acceptProxyProtocol)
        XCTAssertEqual(web.proxyProtocolTrusted.map(\.description), ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
        XCTAssertEqual(
            web.settings,
            ConnectionSettings(
                handshakeTimeout: .seconds(10),
                idleTimeout: .seconds(300),
                halfCloseTimeout: .seconds(30),
                connectTimeout: .seconds(5),
                maxConnectionsPerIP: 100,
                maxNewConnectionsPerIP: 20,
                bufferSize: 65536
            )
        )

        let tls = try XCTUnwrap(web.tls)
        XCTAssertEqual(tls.location, SourceLocation(line: 31, column: 1))
        XCTAssertEqual(
            tls.cert,
            FileReference(
                path: "/etc/secproxy/certs/example.com.pem",
                written: "certs/example.com.pem",
                location: SourceLocation(line: 32, column: 1)
            )
        )
        XCTAssertEqual(tls.key.path, "/etc/secproxy/certs/example.com.key")
        XCTAssertEqual(tls.key.written, "./certs/../certs/example.com.key")
        XCTAssertEqual(tls.key.location, SourceLocation(line: 33, column: 1))
        XCTAssertEqual(tls.minVersion, Located(.tls13, at: SourceLocation(line: 34, column: 1)))
        XCTAssertEqual(tls.maxVersion.value, .tls13)
        XCTAssertEqual(tls.ciphers, Located("ECDHE+AESGCM", at: SourceLocation(line: 36, column: 1)))
        XCTAssertEqual(tls.ciphersuites.value, "TLS_AES_256_GCM_SHA384")
        XCTAssertEqual(tls.curves.value, "X25519")
        XCTAssertEqual(tls.alpn, ["h2", "http/1.1"])
        XCTAssertTrue(tls.sessionTickets)
        XCTAssertEqual(tls.ticketKeyFile?.path, "/var/lib/secproxy/tickets.key")
        XCTAssertEqual(tls.clientCA?.path, "/etc/secproxy/ca/clients.pem")
        XCTAssertEqual(tls.clientAuth, .optional)
        XCTAssertEqual(tls.clientCRL?.path, "/etc/secproxy/ca/clients.crl")
        XCTAssertEqual(
            tls.allowedClients,
            [.commonName("billing"), .dnsName("worker.internal"), .uri("spiffe://example.org/ns/prod/sa/api")]
        )
        XCTAssertTrue(tls.strictSNI)
        XCTAssertEqual(tls.ocspResponse?.path, "/etc/secproxy/ocsp.der")
        XCTAssertEqual(tls.sni.count, 2)
        XCTAssertEqual(tls.sni[0].location, SourceLocation(line: 49, column: 1))
        XCTAssertEqual(tls.sni[0].cert.path, "/etc/secproxy/certs/api.example.org.pem")
        XCTAssertEqual(tls.sni[0].key.path, "/etc/secproxy/certs/api.example.org.key")
        XCTAssertEqual(tls.sni[0].names, ["api.example.org", "*.example.org"])
        XCTAssertNil(tls.sni[1].names)

        XCTAssertEqual(web.routes.map(\.sni), ["api.example.org", "*.example.org"])
        XCTAssertEqual(
            web.routes.map(\.location),
            [SourceLocation(line: 58, column: 1), SourceLocation(line: 62, column: 1)]
        )
        XCTAssertEqual(
            web.routes[1].backends.map(\.kind),
            [.inet(host: "127.0.0.1", port: 8080), .inet(host: "::1", port: 9001)]
        )

        let backendTLS = try XCTUnwrap(web.backendTLS)
        XCTAssertEqual(backendTLS.ca?.path, "/etc/ssl/certs/ca-certificates.crt")
        XCTAssertEqual(backendTLS.serverName, "app.internal")
        XCTAssertEqual(backendTLS.cert?.path, "/etc/secproxy/backend/client.pem")
        XCTAssertEqual(backendTLS.key?.path, "/etc/secproxy/backend/client.key")

        let health = try XCTUnwrap(web.healthCheck)
        XCTAssertEqual(health.interval, .milliseconds(1500))
        XCTAssertEqual(health.timeout, .milliseconds(250))
        XCTAssertEqual(health.fall, 5)
        XCTAssertEqual(health.rise, 1)

        let db = configuration.listeners[1]
        XCTAssertEqual(db.name, "plain-db")
        XCTAssertEqual(db.listen.value, SocketAddressSpec(host: "::1", port: 15432, text: "[::1]:15432"))
        XCTAssertEqual(db.mode, .plain)
        XCTAssertNil(db.tls)
        XCTAssertNil(db.backendTLS)
        XCTAssertNil(db.healthCheck)
        XCTAssertEqual(db.routes.count, 0)
        XCTAssertEqual(db.backends.map(\.kind), [.inet(host: "db.internal", port: 5432)])
        XCTAssertEqual(db.balance, .roundRobin)
        XCTAssertEqual(db.proxyProtocol, .off)
        XCTAssertFalse(db.acceptProxyProtocol)
        XCTAssertEqual(db.proxyProtocolTrusted, [])
        // The listener's own keys override [defaults]; the rest comes from [defaults].
        XCTAssertEqual(
            db.settings,
            ConnectionSettings(
                handshakeTimeout: .seconds(10),
                idleTimeout: .seconds(3600),
                halfCloseTimeout: .seconds(30),
                connectTimeout: .seconds(5),
                maxConnectionsPerIP: 0,
                maxNewConnectionsPerIP: 20,
                bufferSize: 1 << 20
            )
        )

        // 127.0.0.1:8080 is named twice (listener and route) and counts once.
        XCTAssertEqual(configuration.distinctBackendCount, 6)
    }

    func testDefaultsApplyWhereKeysAreAbsent() throws {
        let result = load(
            """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:8443"
            backends = ["127.0.0.1:8080"]

            [listener.tls]
            cert = "cert.pem"
            key = "/abs/key.pem"

            [listener.health_check]
            """
        )
        XCTAssertEqual(result.diagnostics, [])
        let configuration = try XCTUnwrap(result.configuration)
        XCTAssertNil(configuration.admin)
        XCTAssertEqual(configuration.server.workers, 0)
        XCTAssertEqual(configuration.server.maxConnections, 20000)
        XCTAssertEqual(configuration.server.drainTimeout, .seconds(30))
        XCTAssertEqual(configuration.server.logFormat, .logfmt)
        XCTAssertEqual(configuration.server.logLevel, .info)
        XCTAssertFalse(configuration.server.watchFiles)
        let listener = try XCTUnwrap(configuration.listeners.first)
        XCTAssertEqual(listener.mode, .tls, "mode defaults to tls")
        XCTAssertEqual(listener.settings, ConnectionSettings())
        let tls = try XCTUnwrap(listener.tls)
        XCTAssertEqual(tls.cert.path, "/etc/secproxy/cert.pem")
        XCTAssertEqual(tls.key.path, "/abs/key.pem")
        // Defaults of located values point at the table's header.
        XCTAssertEqual(tls.minVersion, Located(.tls12, at: SourceLocation(line: 6, column: 1)))
        XCTAssertEqual(tls.maxVersion, Located(.tls13, at: SourceLocation(line: 6, column: 1)))
        XCTAssertEqual(tls.ciphers.value, "")
        XCTAssertEqual(tls.ciphersuites.value, "")
        XCTAssertEqual(tls.curves.value, ConfigurationDefaults.curves)
        XCTAssertEqual(tls.alpn, [])
        XCTAssertTrue(tls.sessionTickets)
        XCTAssertNil(tls.ticketKeyFile)
        XCTAssertNil(tls.clientCA)
        XCTAssertEqual(tls.clientAuth, .require)
        XCTAssertFalse(tls.strictSNI)
        XCTAssertEqual(tls.sni.count, 0)
        let health = try XCTUnwrap(listener.healthCheck)
        XCTAssertEqual(health.interval, .seconds(5))
        XCTAssertEqual(health.timeout, .seconds(2))
        XCTAssertEqual(health.fall, 3)
        XCTAssertEqual(health.rise, 2)
    }

    func testEmptyOptionalFilesAreUnset() throws {
        let result = load(
            """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:8443"
            backends = ["127.0.0.1:8080"]

            [listener.tls]
            cert = "cert.pem"
            key = "key.pem"
            ticket_key_file = ""
            client_ca = ""
            client_crl = ""
            ocsp_response = ""
            curves = ""
            """
        )
        XCTAssertEqual(result.diagnostics, [])
        let tls = try XCTUnwrap(result.configuration?.listeners.first?.tls)
        XCTAssertNil(tls.ticketKeyFile)
        XCTAssertNil(tls.clientCA)
        XCTAssertNil(tls.clientCRL)
        XCTAssertNil(tls.ocspResponse)
        XCTAssertEqual(tls.curves.value, ConfigurationDefaults.curves)
    }

    func testWarningsKeepTheConfiguration() throws {
        let result = load(
            """
            [[listener]]
            name = "web"
            listen = "127.0.0.1:8443"
            mode = "plain"
            backends = ["127.0.0.1:8080"]

            [listener.backend_tls]
            server_name = ""
            """
        )
        XCTAssertEqual(result.diagnostics.map(\.severity), [.warning])
        let listener = try XCTUnwrap(result.configuration?.listeners.first)
        XCTAssertEqual(listener.backendTLS?.serverName, "")
        XCTAssertNil(listener.backendTLS?.ca)
    }

    func testAllErrorsOfOneFileAreReportedInOneRun() throws {
        let text = try String(contentsOf: Self.goldenFolder.appendingPathComponent("multi-error.toml"), encoding: .utf8)
        let result = load(text, path: "multi-error.toml")
        XCTAssertNil(result.configuration)
        let errors = result.diagnostics.filter { $0.severity == .error }
        // From [server], [defaults], three listeners and their sub-tables.
        XCTAssertGreaterThanOrEqual(errors.count, 12)
        XCTAssertEqual(result.diagnostics, result.diagnostics.sortedByLocation())
        let lines = Set(errors.compactMap { $0.location?.line })
        XCTAssertTrue(lines.isSuperset(of: [2, 3, 6, 7, 12, 14, 16, 17, 20, 21, 23, 30]), "lines: \(lines.sorted())")
    }

    // MARK: - Golden files

    /// `Golden/` next to this file: found through `#filePath`, so the package needs no resources.
    private static var goldenFolder: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")
    }

    private func goldenCases() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: Self.goldenFolder.path)
            .filter { $0.hasSuffix(".toml") }
            .map { String($0.dropLast(".toml".count)) }
            .sorted()
    }

    /// Each `NAME.toml` loads with exactly the diagnostics in `NAME.expected`, one per line, PATH being "NAME.toml".
    func testGoldenFiles() throws {
        let cases = try goldenCases()
        XCTAssertGreaterThanOrEqual(cases.count, 25)
        for name in cases {
            let toml = Self.goldenFolder.appendingPathComponent("\(name).toml")
            let expectedFile = Self.goldenFolder.appendingPathComponent("\(name).expected")
            let text = try String(contentsOf: toml, encoding: .utf8)
            let result = load(text, path: "\(name).toml")
            let actual = result.diagnostics.map(\.description)
            guard let expectedText = try? String(contentsOf: expectedFile, encoding: .utf8) else {
                XCTFail("\(name).expected is missing; actual:\n\(actual.joined(separator: "\n"))")
                continue
            }
            let expected = expectedText.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
            XCTAssertEqual(actual, expected, "\(name).toml")
            XCTAssertEqual(
                result.configuration == nil,
                result.diagnostics.containsErrors,
                "\(name).toml: a configuration exactly when there is no error"
            )
        }
    }

    // MARK: - Value parsers

    func testDurations() {
        XCTAssertEqual(Duration(configText: "250ms"), .milliseconds(250))
        XCTAssertEqual(Duration(configText: "10s"), .seconds(10))
        XCTAssertEqual(Duration(configText: "5m"), .seconds(300))
        XCTAssertEqual(Duration(configText: "1h"), .seconds(3600))
        XCTAssertEqual(Duration(configText: "1m30s"), .seconds(90))
        XCTAssertEqual(Duration(configText: "1.5s"), .milliseconds(1500))
        XCTAssertEqual(Duration(configText: "0.25ms"), .microseconds(250))
        XCTAssertEqual(Duration(configText: "0"), .zero)
        XCTAssertEqual(Duration(configText: "0s"), .zero)
        for bad in ["", "10", "s", "1.s", ".5s", "-1s", "+1s", "1 s", "1sec", "1d", "1S", "10s ", "99999999999999h"] {
            XCTAssertNil(Duration(configText: bad), bad)
        }
    }

    func testSizes() {
        XCTAssertEqual(ByteSize(configText: "16KiB")?.bytes, 16384)
        XCTAssertEqual(ByteSize(configText: "1MiB")?.bytes, 1 << 20)
        XCTAssertEqual(ByteSize(configText: "2GiB")?.bytes, 2 << 30)
        XCTAssertEqual(ByteSize(configText: "100B")?.bytes, 100)
        XCTAssertEqual(ByteSize(configText: "64KB")?.bytes, 64000)
        XCTAssertEqual(ByteSize(configText: "3MB")?.bytes, 3_000_000)
        for bad in ["", "64", "64k", "64kib", "1.5MiB", "-1KiB", "KiB", "64 KiB", "99999999999999999999GiB"] {
            XCTAssertNil(ByteSize(configText: bad), bad)
        }
    }

    func testIPv4Literals() {
        XCTAssertEqual(AddressParser.ipv4("127.0.0.1"), [127, 0, 0, 1])
        XCTAssertEqual(AddressParser.ipv4("255.255.255.255"), [255, 255, 255, 255])
        for bad in ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "a.b.c.d", "1.2.3.-4"] {
            XCTAssertNil(AddressParser.ipv4(Substring(bad)), bad)
        }
    }

    func testIPv6Literals() {
        XCTAssertEqual(AddressParser.ipv6("::"), [UInt8](repeating: 0, count: 16))
        XCTAssertEqual(AddressParser.ipv6("::1"), [UInt8](repeating: 0, count: 15) + [1])
        XCTAssertEqual(
            AddressParser.ipv6("2001:db8::ff00:42:8329"),
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0x00, 0x00, 0x42, 0x83, 0x29]
        )
        XCTAssertEqual(AddressParser.ipv6("1:2:3:4:5:6:7:8")?.count, 16)
        XCTAssertEqual(AddressParser.ipv6("::ffff:192.0.2.1")?.suffix(6), [0xff, 0xff, 192, 0, 2, 1])
        XCTAssertEqual(AddressParser.ipv6("fe80::")?.prefix(2), [0xfe, 0x80])
        for bad in [
            "", ":", ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "g::", "1:2:3:4:5:6:7:8::",
            "::1.2.3", "1.2.3.4::", "fe80::1%eth0", ":1::", "1::2:",
        ] {
            XCTAssertNil(AddressParser.ipv6(Substring(bad)), bad)
        }
    }

    func testListenAddressOverlap() {
        func spec(_ text: String) -> SocketAddressSpec {
            guard case .success(let address) = AddressParser.listenAddress(text) else {
                XCTFail(text)
                return SocketAddressSpec(host: "", port: 0, text: text)
            }
            return address
        }
        XCTAssertTrue(AddressParser.overlap(spec("127.0.0.1:1"), spec("127.0.0.1:1")))
        XCTAssertTrue(AddressParser.overlap(spec("0.0.0.0:1"), spec("10.0.0.1:1")))
        XCTAssertTrue(AddressParser.overlap(spec("10.0.0.1:1"), spec("0.0.0.0:1")))
        XCTAssertTrue(AddressParser.overlap(spec("[::]:1"), spec("10.0.0.1:1")))
        XCTAssertTrue(AddressParser.overlap(spec("[::]:1"), spec("[::1]:1")))
        XCTAssertTrue(AddressParser.overlap(spec("localhost:1"), spec("[::1]:1")))
        XCTAssertTrue(AddressParser.overlap(spec("[::ffff:127.0.0.1]:1"), spec("127.0.0.1:1")))
        XCTAssertFalse(AddressParser.overlap(spec("127.0.0.1:1"), spec("127.0.0.1:2")))
        XCTAssertFalse(AddressParser.overlap(spec("127.0.0.1:0"), spec("127.0.0.1:0")))
        XCTAssertFalse(AddressParser.overlap(spec("0.0.0.0:1"), spec("[::1]:1")))
        XCTAssertFalse(AddressParser.overlap(spec("127.0.0.1:1"), spec("127.0.0.2:1")))
    }

    func testBackendAddresses() {
        func kind(_ text: String) -> BackendAddress.Kind? {
            try? AddressParser.backend(text, directory: "/etc/secproxy").get().kind
        }
        XCTAssertEqual(kind("127.0.0.1:8080"), .inet(host: "127.0.0.1", port: 8080))
        XCTAssertEqual(kind("[::1]:1"), .inet(host: "::1", port: 1))
        XCTAssertEqual(kind("app.internal:65535"), .inet(host: "app.internal", port: 65535))
        XCTAssertEqual(kind("localhost:80"), .inet(host: "localhost", port: 80))
        XCTAssertEqual(kind("unix:/run/app.sock"), .unix(path: "/run/app.sock"))
        XCTAssertEqual(kind("unix:run/../app.sock"), .unix(path: "/etc/secproxy/app.sock"))
        for bad in [
            "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:+80", ":80", "[::1]80", "::1:80", "unix:",
            "a..b:80", "1.2.3.4.5:80", "unix:/" + String(repeating: "x", count: 107),
        ] {
            XCTAssertNil(kind(bad), bad)
        }
    }

    func testPathResolution() {
        XCTAssertEqual(PathResolver.resolve("a.pem", against: "/etc/secproxy"), "/etc/secproxy/a.pem")
        XCTAssertEqual(PathResolver.resolve("./a/../b//c.pem", against: "/etc/secproxy/"), "/etc/secproxy/b/c.pem")
        XCTAssertEqual(PathResolver.resolve("../../../../x", against: "/etc/secproxy"), "/x")
        XCTAssertEqual(PathResolver.resolve("/abs/./y", against: "/etc/secproxy"), "/abs/y")
    }

    func testSuggestions() {
        XCTAssertEqual(EditDistance.between("idle_timout", "idle_timeout"), 1)
        XCTAssertEqual(EditDistance.between("ab", "ba"), 1)
        XCTAssertEqual(EditDistance.between("", "abc"), 3)
        let keys = TableSchema.defaults.keys.map(\.name)
        XCTAssertEqual(EditDistance.closest(to: "idle_timout", among: keys), "idle_timeout")
        XCTAssertEqual(EditDistance.closest(to: "Idle_Timeout", among: keys), "idle_timeout")
        XCTAssertEqual(EditDistance.closest(to: "conect_timeot", among: keys), "connect_timeout")
        XCTAssertNil(EditDistance.closest(to: "colour", among: keys))
        XCTAssertNil(EditDistance.closest(to: "x", among: ["y"]))
    }

    func testDistinctBackendCount() throws {
        let configuration = try XCTUnwrap(
            load(
                """
                [[listener]]
                name = "a"
                listen = "127.0.0.1:1"
                mode = "plain"
                backends = ["127.0.0.1:8080", "unix:/run/a.sock"]

                [[listener]]
                name = "b"
                listen = "127.0.0.1:2"
                mode = "plain"
                backends = ["127.0.0.1:8080", "127.0.0.1:8081"]
                """
            ).configuration
        )
        XCTAssertEqual(configuration.distinctBackendCount, 3)
    }

    // MARK: - Limits and partial results (issue 7 §3)

    func testAConfigurationLargerThanOneMiBIsOneErrorAndIsNotParsed() {
        let text = "[[listener]]\n" + String(repeating: "#", count: ConfigurationLoader.maximumSize)
        let result = load(text)
        XCTAssertNil(result.configuration)
        XCTAssertEqual(
            result.diagnostics.map(\.description),
            ["test.toml: error: configuration is \(text.utf8.count) bytes, larger than 1 MiB, the most a configuration may be"]
        )
        XCTAssertTrue(result.listenerFiles.isEmpty)
    }

    func testListenerFilesAreKeptWhenTheConfigurationHasErrors() {
        let result = load(
            """
            [[listener]]
            name = "a"
            listen = "127.0.0.1:1"
            backends = []

            [listener.tls]
            cert = "a.pem"
            key = "a.key"

            [[listener]]
            name = "b"
            listen = "127.0.0.1:2"
            mode = "plain"
            backends = ["127.0.0.1:8080"]

            [listener.tls]
            cert = "ignored.pem"
            key = "ignored.key"

            [listener.backend_tls]
            ca = "backend-ca.pem"
            server_name = "app.internal"
            """
        )
        XCTAssertNil(result.configuration)
        XCTAssertEqual(result.listenerFiles.map(\.name), ["a", "b"])
        XCTAssertEqual(result.listenerFiles.first?.tls?.cert.path, "/etc/secproxy/a.pem")
        XCTAssertNil(result.listenerFiles.last?.tls, "a plain listener's [listener.tls] is ignored")
        XCTAssertEqual(result.listenerFiles.last?.backendTLS?.ca?.path, "/etc/secproxy/backend-ca.pem")
    }
}
