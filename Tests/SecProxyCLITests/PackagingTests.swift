import Foundation
import SecProxyTestSupport
import XCTest

/// What operators install and run next to the binary (issue 8, items 4–7): the systemd unit and socket
/// (`systemd-analyze verify` and `security`), the sysusers.d/tmpfiles.d snippets, `scripts/install.sh` into a
/// `DESTDIR`, the `.deb` from `scripts/build-deb.sh` (contents, control fields, lintian), the man pages (`man -l`,
/// `groff -ww`), the Prometheus rules (`promtool check rules`, `promtool test rules`) and the Grafana dashboard.
///
/// The tools come from Debian packages that `scripts/test.sh` (and so CI) installs. A test whose tool is missing
/// skips with the package to install, except under CI (`CI` set), where it fails: there the tools must be there.
final class PackagingTests: XCTestCase {
    /// This test's files.
    private var temporary: TemporaryDirectory!

    override func setUpWithError() throws {
        temporary = try TemporaryDirectory(prefix: "secproxy-packaging")
    }

    override func tearDown() {
        temporary?.cleanup()
        temporary = nil
    }

    // MARK: - What SPEC names

    /// SPEC §3 "Metrics": the metric names that are API.
    static let specMetrics: Set<String> = [
        "secproxy_connections_active", "secproxy_connections_total", "secproxy_handshakes_total",
        "secproxy_handshake_failures_total", "secproxy_handshake_duration_seconds", "secproxy_bytes_total",
        "secproxy_backend_up", "secproxy_backend_connect_failures_total",
        "secproxy_certificate_expiry_timestamp_seconds", "secproxy_config_reloads_total",
    ]
    /// Named by issue 8 on top of SPEC: the `[server] max_connections` in force, for the capacity alert.
    static let announcedMetrics: Set<String> = ["secproxy_max_connections"]

    /// SPEC §2: every configuration key, by table.
    static let specKeys: [String: [String]] = [
        "[server]": ["workers", "max_connections", "drain_timeout", "log_format", "log_level", "watch_files"],
        "[admin]": ["listen"],
        "[defaults]": [
            "handshake_timeout", "idle_timeout", "half_close_timeout", "connect_timeout", "max_connections_per_ip",
            "max_new_connections_per_ip", "buffer_size",
        ],
        "[[listener]]": [
            "name", "listen", "mode", "backends", "balance", "proxy_protocol", "accept_proxy_protocol",
            "proxy_protocol_trusted",
        ],
        "[listener.tls]": [
            "cert", "key", "min_version", "max_version", "ciphers", "ciphersuites", "curves", "alpn",
            "session_tickets", "ticket_key_file", "client_ca", "client_auth", "client_crl", "allowed_clients",
            "strict_sni", "ocsp_response",
        ],
        "[[listener.tls.sni]]": ["cert", "key", "names"],
        "[[listener.route]]": ["sni", "backends"],
        "[listener.backend_tls]": ["ca", "server_name", "cert", "key"],
        "[listener.health_check]": ["interval", "timeout", "fall", "rise"],
    ]

    // MARK: - systemd

    func testUnitAndSocketPassSystemdAnalyzeVerifyWithoutWarnings() throws {
        let analyze = try tool("systemd-analyze", package: "systemd")
        let destdir = try install()
        let unit = try String(
            contentsOfFile: "\(destdir)/usr/local/lib/systemd/system/secproxy.service",
            encoding: .utf8
        )

        // The unit names the binary installed for its PREFIX.
        XCTAssertTrue(unit.contains("\nExecStart=/usr/local/bin/secproxy -c ${SECPROXY_CONFIG}\n"), unit)
        XCTAssertTrue(unit.contains("\nExecStartPre=/usr/local/bin/secproxy --check-config -c ${SECPROXY_CONFIG}\n"))
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: "\(destdir)/usr/local/bin/secproxy"))
        // Keys systemd 252 knows; the ceilings of item 4 are set.
        XCTAssertFalse(settingLines(unit).contains { $0.hasPrefix("FileDescriptorStorePreserve=") })
        for key in ["TasksMax=", "MemoryHigh=", "MemoryMax=", "FileDescriptorStoreMax=", "LimitNOFILE="] {
            XCTAssertEqual(settingLines(unit).filter { $0.hasPrefix(key) }.count, 1, key)
        }

        // verify checks that ExecStart's binary exists and Documentation='s man pages resolve: point both into
        // DESTDIR (only the executable paths change) and check the unit with the socket that activates it.
        let folder = try temporary.makeDirectory("verify")
        try unit.replacingOccurrences(of: "/usr/local/bin/secproxy", with: "\(destdir)/usr/local/bin/secproxy")
            .write(toFile: "\(folder)/secproxy.service", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(
            atPath: "\(destdir)/usr/local/share/doc/secproxy/examples/secproxy.socket",
            toPath: "\(folder)/secproxy.socket"
        )
        let environment: [String: String?] = ["MANPATH": "\(destdir)/usr/local/share/man", "SYSTEMD_LOG_COLOR": "0"]
        let verified = try Subprocess.run(
            analyze,
            ["verify", "secproxy.service", "secproxy.socket"],
            environment: environment,
            currentDirectory: folder,
            timeout: 60
        )
        XCTAssertEqual(verified.exitCode, 0, verified.stdout + verified.stderr)
        XCTAssertEqual(verified.stdout + verified.stderr, "", "systemd-analyze verify must print nothing")

        // The drop-in holds what needs systemd >= 254 and nothing else; on such a systemd it verifies too.
        let dropIn = try repositoryText("systemd/systemd-254/secproxy.service.d/fdstore-preserve.conf")
        XCTAssertEqual(settingLines(dropIn), ["[Service]", "FileDescriptorStorePreserve=yes"])
        if try systemdVersion(analyze) >= 254 {
            let folder254 = try temporary.makeDirectory("verify254/secproxy.service.d")
            try FileManager.default.copyItem(
                atPath: "\(folder)/secproxy.service",
                toPath: "\(folder254)/../secproxy.service"
            )
            try dropIn.write(toFile: "\(folder254)/fdstore-preserve.conf", atomically: true, encoding: .utf8)
            let withDropIn = try Subprocess.run(
                analyze,
                ["verify", "secproxy.service"],
                environment: environment,
                currentDirectory: (folder254 as NSString).deletingLastPathComponent,
                timeout: 60
            )
            XCTAssertEqual(withDropIn.stdout + withDropIn.stderr, "")
        }
    }

    func testUnitSecurityExposureIsAtMostTwo() throws {
        let analyze = try tool("systemd-analyze", package: "systemd")
        // In place: systemd-analyze also loads drop-ins from a secproxy.service.d/ beside the file, and none may
        // be there that systemd 252 warns about.
        let result = try Subprocess.run(
            analyze,
            ["security", "--offline=true", "--no-pager", repositoryPath("systemd/secproxy.service")],
            environment: ["SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"],
            timeout: 60
        )
        XCTAssertEqual(result.exitCode, 0, result.stdout + result.stderr)
        let output = result.stdout + result.stderr
        // "→ Overall exposure level for secproxy.service: 1.7 OK 🙂"
        guard let line = output.split(separator: "\n").first(where: { $0.contains("Overall exposure level") }),
            let number = line.split(separator: ":").last?.split(separator: " ").first.flatMap({ Double($0) })
        else {
            return XCTFail("no exposure level in:\n\(output)")
        }
        XCTAssertLessThanOrEqual(number, 2.0, String(line))
        XCTAssertEqual(
            result.stderrLines.filter { $0.contains("Unknown") || $0.hasPrefix("/") },
            [],
            "warnings while loading the unit"
        )
    }

    func testSysusersAndTmpfilesMakeTheUserAndConfigFolder() throws {
        let sysusers = try tool("systemd-sysusers", package: "systemd")
        let tmpfiles = try tool("systemd-tmpfiles", package: "systemd")
        let root = try install()
        // With --root, both read the snippets where install.sh put them (/usr/local/lib/…) and the users of root.
        let users = try Subprocess.run(sysusers, ["--root=\(root)"], timeout: 60)
        XCTAssertEqual(users.exitCode, 0, users.stderr)
        let passwd = try String(contentsOfFile: "\(root)/etc/passwd", encoding: .utf8)
        let entry = try XCTUnwrap(passwd.split(separator: "\n").first { $0.hasPrefix("secproxy:") }, passwd)
        let fields = entry.split(separator: ":", omittingEmptySubsequences: false)
        XCTAssertEqual(fields.count, 7)
        XCTAssertLessThan(Int(fields[2]) ?? 65534, 1000, "a system user: \(entry)")
        XCTAssertEqual(fields[6], "/usr/sbin/nologin")
        let group = try String(contentsOfFile: "\(root)/etc/group", encoding: .utf8)
        let gid = try XCTUnwrap(
            group.split(separator: "\n").first { $0.hasPrefix("secproxy:") }?.split(separator: ":")[2]
        )

        let created = try Subprocess.run(tmpfiles, ["--root=\(root)", "--create"], timeout: 60)
        XCTAssertEqual(created.exitCode, 0, created.stderr)
        for folder in ["etc/secproxy", "etc/secproxy/certs"] {
            var info = stat()
            XCTAssertEqual(stat("\(root)/\(folder)", &info), 0, folder)
            XCTAssertEqual(Int(info.st_mode) & 0o7777, 0o750, folder)
            XCTAssertEqual(info.st_uid, 0, folder)
            XCTAssertEqual(String(info.st_gid), String(gid), folder)
        }
    }

    // MARK: - install.sh

    func testInstallIntoDestdirLaysOutTheTreeAndKeepsAnExistingConfig() throws {
        let destdir = try install()
        let expected = [
            "etc/secproxy/secproxy.toml",
            "usr/local/bin/secproxy",
            "usr/local/lib/systemd/system/secproxy.service",
            "usr/local/lib/sysusers.d/secproxy.conf",
            "usr/local/lib/tmpfiles.d/secproxy.conf",
            "usr/local/share/doc/secproxy/examples/fdstore-preserve.conf",
            "usr/local/share/doc/secproxy/examples/secproxy.socket",
            "usr/local/share/doc/secproxy/examples/secproxy.toml",
            "usr/local/share/man/man5/secproxy.toml.5",
            "usr/local/share/man/man8/secproxy.8",
        ]
        XCTAssertEqual(try files(under: destdir), expected)
        XCTAssertEqual(try fileMode("\(destdir)/usr/local/bin/secproxy"), 0o755)
        for file in expected where !file.hasSuffix("bin/secproxy") {
            XCTAssertEqual(try fileMode("\(destdir)/\(file)"), 0o644, file)
        }
        let config = "\(destdir)/etc/secproxy/secproxy.toml"
        XCTAssertEqual(try String(contentsOfFile: config, encoding: .utf8), try repositoryText("config/secproxy.toml"))
        let version = try Subprocess.run("\(destdir)/usr/local/bin/secproxy", ["--version"])
        XCTAssertEqual(version.exitCode, 0)
        XCTAssertTrue(version.stdout.hasPrefix("secproxy "), version.stdout)

        // A second install (an upgrade) replaces everything but the operator's configuration.
        let edited = "# edited by the operator\n[[listener]]\nname = \"mine\"\n"
        try edited.write(toFile: config, atomically: true, encoding: .utf8)
        let second = try runScript(
            "install.sh",
            ["DESTDIR=\(destdir)"],
            environment: ["SECPROXY_BIN": try ProxyProcess.binaryPath()]
        )
        XCTAssertEqual(second.exitCode, 0, second.stderr)
        XCTAssertTrue(second.stdout.contains("/etc/secproxy/secproxy.toml exists: kept"), second.stdout)
        XCTAssertEqual(try String(contentsOfFile: config, encoding: .utf8), edited)
        XCTAssertEqual(try files(under: destdir), expected)

        // Another PREFIX moves everything but /etc, and the unit follows the binary.
        let opt = try install(prefix: "/opt/secproxy", into: "opt")
        let unit = try String(
            contentsOfFile: "\(opt)/opt/secproxy/lib/systemd/system/secproxy.service",
            encoding: .utf8
        )
        XCTAssertTrue(unit.contains("\nExecStart=/opt/secproxy/bin/secproxy -c ${SECPROXY_CONFIG}\n"), unit)
        XCTAssertFalse(unit.contains("/usr/local/bin"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(opt)/opt/secproxy/share/man/man8/secproxy.8"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(opt)/etc/secproxy/secproxy.toml"))

        // No binary: a clear message, nothing installed.
        let empty = try temporary.makeDirectory("empty")
        let missing = try runScript(
            "install.sh",
            ["DESTDIR=\(empty)"],
            environment: ["SECPROXY_BIN": "\(empty)/no-such-secproxy"]
        )
        XCTAssertEqual(missing.exitCode, 1)
        XCTAssertTrue(missing.stderr.contains("swift build -c release"), missing.stderr)
        XCTAssertEqual(try files(under: empty), [])
    }

    // MARK: - .deb

    func testDebianPackageContentsControlFieldsAndLintian() throws {
        let dpkgDeb = try tool("dpkg-deb", package: "dpkg")
        _ = try tool("dpkg-shlibdeps", package: "dpkg-dev")
        let lintian = try tool("lintian", package: "lintian")
        let binary = try releaseBinary()
        let outdir = try temporary.makeDirectory("deb")

        let started = Date()
        let built = try runScript(
            "build-deb.sh",
            [],
            // Level 1: the tests check the package, not how small xz gets it (-6 takes 4 times as long).
            environment: ["SECPROXY_BIN": binary, "OUTDIR": outdir, "LINTIAN": "no", "DEB_COMPRESSION_LEVEL": "1"],
            timeout: 300
        )
        XCTAssertEqual(built.exitCode, 0, built.stdout + built.stderr)
        let deb = try XCTUnwrap(built.stdoutLines.last, built.stdout)
        guard FileManager.default.fileExists(atPath: deb) else {
            return XCTFail("build-deb.sh printed \(deb), which does not exist:\n\(built.stdout)\(built.stderr)")
        }
        XCTAssertEqual((deb as NSString).deletingLastPathComponent, outdir)
        let buildSeconds = Date().timeIntervalSince(started)

        // Control fields.
        let upstream = try XCTUnwrap(try Subprocess.run(binary, ["--version"]).stdout.split(separator: " ").last)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let architecture = try Subprocess.run("/usr/bin/env", ["dpkg", "--print-architecture"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(URL(fileURLWithPath: deb).lastPathComponent, "secproxy_\(upstream)-1_\(architecture).deb")
        let control = try Subprocess.run(dpkgDeb, ["--field", deb])
        XCTAssertEqual(control.exitCode, 0, control.stderr)
        let fields = controlFields(control.stdout)
        XCTAssertEqual(fields["Package"], "secproxy")
        XCTAssertEqual(fields["Version"], "\(upstream)-1")
        XCTAssertEqual(fields["Architecture"], architecture)
        XCTAssertEqual(fields["Section"], "net")
        XCTAssertEqual(fields["Priority"], "optional")
        XCTAssertNotNil(fields["Maintainer"].flatMap { $0.contains("@") ? $0 : nil }, control.stdout)
        XCTAssertGreaterThan(Int(fields["Installed-Size"] ?? "") ?? 0, 1000)
        XCTAssertTrue(fields["Description"]?.hasPrefix("TLS-terminating") ?? false, control.stdout)
        let depends = fields["Depends"] ?? ""
        for dependency in ["libc6", "libssl3", "systemd | systemd-sysusers"] {
            XCTAssertTrue(depends.contains(dependency), "Depends: \(depends)")
        }
        XCTAssertFalse(depends.contains("swift"), "the Swift runtime is linked in: \(depends)")
        let conffiles = try Subprocess.run(dpkgDeb, ["--info", deb, "conffiles"])
        XCTAssertEqual(conffiles.stdoutLines, ["/etc/secproxy/secproxy.toml"])

        // Contents: the install.sh layout with PREFIX=/usr, man pages gzipped, Debian's doc files.
        let listing = try Subprocess.run(dpkgDeb, ["--contents", deb])
        XCTAssertEqual(listing.exitCode, 0, listing.stderr)
        let paths = Set(
            listing.stdoutLines.compactMap { line -> String? in
                guard let path = line.split(separator: " ", omittingEmptySubsequences: true).last else { return nil }
                return path.hasSuffix("/") ? nil : String(path.dropFirst())  // "./usr/bin/secproxy" -> "/usr/bin/…"
            }
        )
        XCTAssertEqual(
            paths,
            [
                "/etc/secproxy/secproxy.toml",
                "/lib/systemd/system/secproxy.service",
                "/usr/bin/secproxy",
                "/usr/lib/sysusers.d/secproxy.conf",
                "/usr/lib/tmpfiles.d/secproxy.conf",
                "/usr/share/doc/secproxy/changelog.Debian.gz",
                "/usr/share/doc/secproxy/copyright",
                "/usr/share/doc/secproxy/examples/fdstore-preserve.conf",
                "/usr/share/doc/secproxy/examples/secproxy.socket",
                "/usr/share/doc/secproxy/examples/secproxy.toml",
                "/usr/share/lintian/overrides/secproxy",
                "/usr/share/man/man5/secproxy.toml.5.gz",
                "/usr/share/man/man8/secproxy.8.gz",
            ]
        )
        for line in listing.stdoutLines {
            XCTAssertTrue(line.contains(" root/root "), "owned by root: \(line)")
        }

        // Inside: the unit runs /usr/bin/secproxy; the binary is stripped and runs; the maintainer scripts.
        let tree = try temporary.makeDirectory("extracted")
        XCTAssertEqual(try Subprocess.run(dpkgDeb, ["-x", deb, tree]).exitCode, 0)
        let unit = try String(contentsOfFile: "\(tree)/lib/systemd/system/secproxy.service", encoding: .utf8)
        XCTAssertTrue(unit.contains("\nExecStart=/usr/bin/secproxy -c ${SECPROXY_CONFIG}\n"))
        XCTAssertEqual(try Subprocess.run("\(tree)/usr/bin/secproxy", ["--version"]).stdout, "secproxy \(upstream)\n")
        let control2 = try temporary.makeDirectory("control")
        XCTAssertEqual(try Subprocess.run(dpkgDeb, ["-e", deb, control2]).exitCode, 0)
        let postinst = try String(contentsOfFile: "\(control2)/postinst", encoding: .utf8)
        XCTAssertTrue(postinst.contains("systemd-sysusers"), postinst)
        XCTAssertTrue(postinst.contains("systemd-tmpfiles"), postinst)
        XCTAssertTrue(postinst.contains("deb-systemd-helper enable 'secproxy.service'"))
        // Started only on upgrades (try-restart of a running one), never on a first install.
        let starts = postinst.split(separator: "\n").filter { $0.contains("deb-systemd-invoke") }
        XCTAssertEqual(
            starts.map { $0.trimmingCharacters(in: .whitespaces) },
            [
                "deb-systemd-invoke try-restart 'secproxy.service' >/dev/null || true"
            ]
        )
        for script in ["postinst", "prerm", "postrm"] {
            XCTAssertEqual(try fileMode("\(control2)/\(script)"), 0o755, script)
            let syntax = try Subprocess.run("/bin/sh", ["-n", "\(control2)/\(script)"])
            XCTAssertEqual(syntax.exitCode, 0, "\(script): \(syntax.stderr)")
        }

        // lintian: no error; what it still warns about is overridden in packaging/deb/lintian-overrides.
        let lintianStarted = Date()
        let checked = try Subprocess.run(lintian, ["--fail-on", "error,warning", deb], timeout: 300)
        let lines = (checked.stdoutLines + checked.stderrLines).filter { !$0.contains("running with root privileges") }
        XCTAssertEqual(checked.exitCode, 0, lines.joined(separator: "\n"))
        XCTAssertEqual(lines.filter { $0.hasPrefix("E:") || $0.hasPrefix("W:") }, [])
        print(
            "PackagingTests: .deb built in \(Int(buildSeconds)) s, "
                + "lintian \(Int(Date().timeIntervalSince(lintianStarted))) s"
        )
    }

    // MARK: - Man pages

    func testManPagesRenderWithoutWarnings() throws {
        let man = try tool("man", package: "man-db")
        let groff = try tool("groff", package: "groff-base")
        for page in ["man/secproxy.8", "man/secproxy.toml.5"] {
            let path = repositoryPath(page)
            let rendered = try Subprocess.run(
                man,
                ["-l", path],
                environment: ["MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"]
            )
            XCTAssertEqual(rendered.exitCode, 0, "\(page): \(rendered.stderr)")
            XCTAssertEqual(rendered.stderr, "", "\(page): man -l warns")
            XCTAssertTrue(rendered.stdout.contains("NAME"), page)
            for line in rendered.stdoutLines {
                XCTAssertLessThanOrEqual(line.count, 80, "\(page) at MANWIDTH=80: \(line)")
            }
            let strict = try Subprocess.run(groff, ["-ww", "-z", "-man", path])
            XCTAssertEqual(strict.exitCode, 0, page)
            XCTAssertEqual(strict.stderr, "", "\(page): groff -ww warns")
        }

        // secproxy(8): the command line, signals, exit codes, environment and files of SPEC §1/§3.
        let daemon = try render(man, "man/secproxy.8")
        for fragment in [
            "--check-config", "--format", "--version", "-c, --config", "SIGHUP", "SIGTERM", "SIGINT", "EXIT STATUS",
            "SECPROXY_CONFIG", "NOTIFY_SOCKET", "LISTEN_FDNAMES", "FDSTORE", "/etc/secproxy/secproxy.toml",
            "READY=1", "RELOADING=1", "WATCHDOG=1", "journalctl",
        ] {
            XCTAssertTrue(daemon.contains(fragment), "secproxy(8) lacks '\(fragment)'")
        }
        for code in ["0", "1", "2", "3"] {
            XCTAssertTrue(daemon.contains("\n       \(code)      "), "secproxy(8) lacks exit status \(code)")
        }
        for metric in Self.specMetrics {
            XCTAssertTrue(daemon.contains(metric), "secproxy(8) lacks \(metric)")
        }

        // secproxy.toml(5): every key of SPEC §2, as a tagged paragraph under its table's section.
        let format = try render(man, "man/secproxy.toml.5")
        let sections = manSections(format)
        for (table, keys) in Self.specKeys {
            let body = try XCTUnwrap(sections[table], "secproxy.toml(5) has no section \(table)")
            for key in keys {
                XCTAssertTrue(
                    body.contains {
                        $0.hasPrefix("       \(key) ") || $0 == "       \(key)" || $0.hasPrefix("       \(key),")
                            || $0.contains(", \(key) ")
                    },
                    "secproxy.toml(5) \(table) does not describe '\(key)'"
                )
            }
        }
        // The key list above is SPEC's: check it against SPEC.md when the shared folder is beside the checkout.
        let spec = repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared/SPEC.md").path
        if let text = try? String(contentsOfFile: spec, encoding: .utf8) {
            XCTAssertEqual(
                specKeysByTable(text),
                Self.specKeys.mapValues { Set($0) },
                "SPEC §2 changed: update specKeys"
            )
        }
    }

    // MARK: - Prometheus and Grafana

    func testPrometheusAlertingRulesCheckAndPassTheirUnitTests() throws {
        let promtool = try tool("promtool", package: "prometheus")
        let folder = repositoryPath("contrib/prometheus")
        let checked = try Subprocess.run(
            promtool,
            ["check", "rules", "alerts.yml"],
            currentDirectory: folder,
            timeout: 60
        )
        XCTAssertEqual(checked.exitCode, 0, checked.stdout + checked.stderr)
        XCTAssertTrue(checked.stdout.contains("SUCCESS"), checked.stdout)
        let tested = try Subprocess.run(
            promtool,
            ["test", "rules", "alerts_test.yml"],
            currentDirectory: folder,
            timeout: 120
        )
        XCTAssertEqual(tested.exitCode, 0, tested.stdout + tested.stderr)
        XCTAssertTrue(tested.stdout.contains("SUCCESS"), tested.stdout)

        // Every alert of item 6 is there, is unit-tested, and reads only metrics that exist.
        let rules = try repositoryText("contrib/prometheus/alerts.yml")
        let tests = try repositoryText("contrib/prometheus/alerts_test.yml")
        for alert in [
            "SecproxyCertificateExpiringSoon", "SecproxyHandshakeFailureRatioHigh", "SecproxyBackendDown",
            "SecproxyReloadFailed", "SecproxyConnectionsNearLimit",
        ] {
            XCTAssertTrue(rules.contains("- alert: \(alert)\n"), alert)
        }
        let alerts = rules.split(separator: "\n").compactMap { line -> String? in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            return trimmed.hasPrefix("- alert: ") ? String(trimmed.dropFirst("- alert: ".count)) : nil
        }
        for alert in alerts {
            XCTAssertTrue(tests.contains("alertname: \(alert)\n"), "\(alert) has no promtool test")
        }
        XCTAssertTrue(rules.contains("secproxy_certificate_expiry_timestamp_seconds - time()) < 14 * 86400"))
        XCTAssertTrue(rules.contains("secproxy_config_reloads_total{result=\"failure\"}"))
        XCTAssertEqual(metricNames(in: rules).subtracting(Self.specMetrics.union(Self.announcedMetrics)), [])
    }

    func testGrafanaDashboardIsValidJSONOverSpecMetrics() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: repositoryPath("contrib/grafana/secproxy.json")))
        let dashboard = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(dashboard["title"] as? String, "secproxy")
        let panels = try XCTUnwrap(dashboard["panels"] as? [[String: Any]])
        let ids = panels.compactMap { $0["id"] as? Int }
        XCTAssertEqual(ids.count, panels.count, "every panel has an id")
        XCTAssertEqual(Set(ids).count, ids.count, "panel ids are unique")

        var expressions: [String] = []
        collectQueries(dashboard, into: &expressions)
        let used = metricNames(in: expressions.joined(separator: "\n"))
        XCTAssertEqual(used.subtracting(Self.specMetrics.union(Self.announcedMetrics)), [], "unknown metric names")
        XCTAssertEqual(Self.specMetrics.subtracting(used), [], "SPEC metrics without a panel")

        let titles = panels.compactMap { ($0["title"] as? String)?.lowercased() }.joined(separator: "\n")
        for topic in ["connections", "handshake", "failure", "bytes", "backend", "certificate", "reload"] {
            XCTAssertTrue(titles.contains(topic), "no panel about \(topic): \(titles)")
        }

        // Every panel query is valid PromQL: promtool parses them as recording rules, Grafana's variables
        // replaced by what they expand to.
        guard let promtool = Subprocess.which("promtool") else {
            if isCI { XCTFail("promtool missing in CI (apt-get install prometheus)") }
            return
        }
        var rules = "groups:\n  - name: dashboard\n    rules:\n"
        for (index, expression) in expressions.filter({ $0.contains("secproxy_") && !$0.hasPrefix("label_values(") })
            .enumerated()
        {
            let promql =
                expression
                .replacingOccurrences(of: "$__rate_interval", with: "5m")
                .replacingOccurrences(of: "$__range", with: "1h")
                .replacingOccurrences(of: "$instance", with: ".*")
                .replacingOccurrences(of: "$listener", with: ".*")
            XCTAssertFalse(promql.contains("$"), "an unexpanded variable in \(expression)")
            let quoted = try String(
                decoding: JSONSerialization.data(withJSONObject: [promql], options: [.withoutEscapingSlashes]),
                as: UTF8.self
            ).dropFirst().dropLast()
            rules += "      - record: dashboard:query_\(index)\n        expr: \(quoted)\n"
        }
        let file = try temporary.write("dashboard-rules.yml", rules)
        let checked = try Subprocess.run(promtool, ["check", "rules", file], timeout: 60)
        XCTAssertEqual(checked.exitCode, 0, checked.stdout + checked.stderr + "\n" + rules)
    }

    // MARK: - Helpers

    /// The package root (this file is `Tests/SecProxyCLITests/PackagingTests.swift`).
    private var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    private func repositoryPath(_ relative: String) -> String {
        repositoryRoot.appendingPathComponent(relative).path
    }

    private func repositoryText(_ relative: String) throws -> String {
        try String(contentsOfFile: repositoryPath(relative), encoding: .utf8)
    }

    private var isCI: Bool {
        !(ProcessInfo.processInfo.environment["CI"] ?? "").isEmpty
    }

    /// The path of `name`; when it is missing, a skip naming the package (a failure under CI).
    private func tool(
        _ name: String,
        package: String,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws -> String {
        for folder in ["", "/usr/sbin/", "/sbin/", "/bin/"] {
            if let path = Subprocess.which(folder.isEmpty ? name : folder + name) { return path }
        }
        let message = "\(name) is not installed (Debian package \(package); scripts/test.sh installs it)"
        if isCI {
            XCTFail(message, file: file, line: line)
            throw SubprocessError(message)
        }
        throw XCTSkip(message)
    }

    /// A release binary with the Swift runtime linked in (what a package needs): `$SECPROXY_RELEASE_BIN` (set by
    /// scripts/test.sh), else `.build/release/secproxy`.
    private func releaseBinary() throws -> String {
        let environment = ProcessInfo.processInfo.environment["SECPROXY_RELEASE_BIN"] ?? ""
        let path = environment.isEmpty ? repositoryPath(".build/release/secproxy") : environment
        let build = "swift build -c release --static-swift-stdlib --product secproxy (scripts/test.sh does)"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            let message = "no release binary at \(path) for the .deb: \(build)"
            if isCI {
                XCTFail(message)
                throw SubprocessError(message)
            }
            throw XCTSkip(message)
        }
        let objdump = try tool("objdump", package: "binutils")
        let headers = try Subprocess.run(objdump, ["-p", path], timeout: 60).stdout
        if headers.contains("libswiftCore.so") {
            let message = "\(path) links the Swift runtime dynamically, a package cannot ship it: \(build)"
            if isCI {
                XCTFail(message)
                throw SubprocessError(message)
            }
            throw XCTSkip(message)
        }
        return path
    }

    /// Runs `scripts/NAME arguments…` with bash from the repository root.
    private func runScript(
        _ name: String,
        _ arguments: [String],
        environment: [String: String?] = [:],
        timeout: TimeInterval = 120
    ) throws -> Subprocess.Result {
        try Subprocess.run(
            "/bin/bash",
            [repositoryPath("scripts/\(name)")] + arguments,
            environment: environment,
            currentDirectory: repositoryRoot.path,
            timeout: timeout
        )
    }

    /// `scripts/install.sh` into a fresh DESTDIR with the test build's binary; returns the DESTDIR.
    private func install(prefix: String? = nil, into name: String = "destdir") throws -> String {
        let destdir = try temporary.makeDirectory(name)
        var arguments = ["DESTDIR=\(destdir)"]
        if let prefix { arguments.append("PREFIX=\(prefix)") }
        let result = try runScript(
            "install.sh",
            arguments,
            environment: ["SECPROXY_BIN": try ProxyProcess.binaryPath()]
        )
        XCTAssertEqual(result.exitCode, 0, result.stdout + result.stderr)
        return destdir
    }

    /// The regular files under `folder`, relative and sorted.
    private func files(under folder: String) throws -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: folder) else { return [] }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: "\(folder)/\(relative)", isDirectory: &isDirectory),
                !isDirectory.boolValue
            {
                found.append(relative)
            }
        }
        return found.sorted()
    }

    /// The unit-file lines that are settings or section headers (no comments, no blank lines).
    private func settingLines(_ text: String) -> [String] {
        text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") && !$0.hasPrefix(";") }
    }

    private func systemdVersion(_ analyze: String) throws -> Int {
        // "systemd 252 (252.38-1~deb12u1)"
        let first = try Subprocess.run(analyze, ["--version"]).stdoutLines.first ?? ""
        return Int(first.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    /// `Field: value` pairs of a control file (continuation lines dropped).
    private func controlFields(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix(" ") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    /// A man page as `man -l` prints it at 80 columns.
    private func render(_ man: String, _ page: String) throws -> String {
        try Subprocess.run(
            man,
            ["-l", repositoryPath(page)],
            environment: ["MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"]
        ).stdout
    }

    /// The lines of each top-level section of a rendered man page, by heading.
    private func manSections(_ rendered: String) -> [String: [String]] {
        var sections: [String: [String]] = [:]
        var current = ""
        for line in rendered.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if let first = line.first, !first.isWhitespace {
                current = line
                sections[current] = []
            } else {
                sections[current, default: []].append(line)
            }
        }
        return sections
    }

    /// SPEC §2's keys by table, read from the TOML block of SPEC.md (commented-out keys included).
    private func specKeysByTable(_ spec: String) -> [String: Set<String>] {
        guard let start = spec.range(of: "## 2. Configuration file"),
            let block = spec[start.upperBound...].range(of: "```toml"),
            let end = spec[block.upperBound...].range(of: "```")
        else { return [:] }
        var keys: [String: Set<String>] = [:]
        var table = ""
        for raw in spec[block.upperBound..<end.lowerBound].split(separator: "\n") {
            var line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") {
                table = String(line.prefix { $0 != " " })
                keys[table, default: []] = keys[table] ?? []
                continue
            }
            if line.hasPrefix("# ") { line = String(line.dropFirst(2)) }
            let name = line.prefix { $0.isLetter || $0 == "_" }
            if !name.isEmpty, line.dropFirst(name.count).trimmingCharacters(in: .whitespaces).hasPrefix("=") {
                keys[table, default: []].insert(String(name))
            }
        }
        return keys
    }

    /// Every `secproxy_…` metric name in `text`, histogram series suffixes folded into their metric.
    private func metricNames(in text: String) -> Set<String> {
        var names: Set<String> = []
        var rest = Substring(text)
        while let range = rest.range(of: "secproxy_") {
            let name = rest[range.lowerBound...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            var metric = String(name)
            for suffix in ["_bucket", "_sum", "_count"]
            where metric.hasSuffix(suffix) && metric.hasPrefix("secproxy_handshake_duration_seconds") {
                metric = String(metric.dropLast(suffix.count))
            }
            names.insert(metric)
            rest = rest[name.endIndex...]
        }
        return names
    }

    /// The PromQL of a dashboard: panel targets' `expr`, annotation `expr`, template variables' queries.
    private func collectQueries(_ value: Any, into expressions: inout [String]) {
        if let object = value as? [String: Any] {
            for (key, child) in object {
                if key == "expr" || key == "query" || key == "definition", let text = child as? String {
                    expressions.append(text)
                } else {
                    collectQueries(child, into: &expressions)
                }
            }
        } else if let array = value as? [Any] {
            for child in array { collectQueries(child, into: &expressions) }
        }
    }
}
