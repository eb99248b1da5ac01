import Foundation
import SecProxyTestSupport
import XCTest

/// `--version`, `--help`, bad flags, config path selection, exit codes of the daemon (SPEC §1).
final class CommandLineTests: CLITestCase {
    func testVersionExitsZeroAndPrintsAVersion() throws {
        let result = try runSecproxy(["--version"])
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        let text = result.stdout + result.stderr
        XCTAssertNotNil(
            text.range(of: #"[0-9]+\.[0-9]+"#, options: .regularExpression),
            "no version number in: \(text)"
        )
    }

    func testHelpExitsZeroAndDescribesTheOptions() throws {
        let result = try runSecproxy(["--help"])
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        let text = result.stdout + result.stderr
        XCTAssertTrue(text.contains("--check-config"), text)
        XCTAssertTrue(text.contains("--config") || text.contains("-c"), text)
    }

    func testUnknownFlagExitsTwoWithUsageOnStderr() throws {
        let result = try runSecproxy(["--no-such-flag"])
        XCTAssertEqual(result.exitCode, 2, "stdout: \(result.stdout)\nstderr: \(result.stderr)")
        XCTAssertTrue(result.stderr.lowercased().contains("usage"), "no usage on stderr: \(result.stderr)")
    }

    func testMissingOptionValueExitsTwo() throws {
        let result = try runSecproxy(["--check-config", "-c"])
        XCTAssertEqual(result.exitCode, 2, "stdout: \(result.stdout)\nstderr: \(result.stderr)")
        XCTAssertFalse(result.stderr.isEmpty)
    }

    func testUnreadableConfigurationIsReportedWithItsPath() throws {
        let missing = temporary.file("does-not-exist.toml")
        let result = try checkConfig(missing)
        XCTAssertEqual(result.exitCode, 1, result.stderr)
        XCTAssertTrue(
            result.stderrLines.contains {
                $0.hasPrefix("\(missing): error: cannot read configuration: ") && $0.count > missing.count + 40
            },
            result.stderr
        )
        XCTAssertEqual(result.stdout, "")

        let directory = try temporary.makeDirectory("a-directory.toml")
        let again = try checkConfig(directory)
        XCTAssertEqual(again.exitCode, 1, again.stderr)
        XCTAssertTrue(
            again.stderrLines.contains { $0.hasPrefix("\(directory): error: cannot read configuration: ") },
            again.stderr
        )
    }

    func testSECPROXY_CONFIGIsUsedWithoutDashC() throws {
        let path = try writeConfig(plainConfig(listen: "127.0.0.1:18081"), name: "from-env.toml")
        let result = try runSecproxy(["--check-config"], environment: ["SECPROXY_CONFIG": path])
        XCTAssertEqual(result.exitCode, 0, result.stderr)
        XCTAssertEqual(result.stdoutLines.count, 1, result.stdout)
        XCTAssertTrue(result.stdout.hasPrefix("\(path): OK ("), result.stdout)

        // A missing file named by the variable is reported under that name.
        let missing = temporary.file("missing-from-env.toml")
        let failed = try runSecproxy(["--check-config"], environment: ["SECPROXY_CONFIG": missing])
        XCTAssertEqual(failed.exitCode, 1)
        XCTAssertTrue(failed.stderr.contains("\(missing): error: cannot read configuration: "), failed.stderr)

        // -c wins over the variable.
        let explicit = try runSecproxy(["--check-config", "-c", path], environment: ["SECPROXY_CONFIG": missing])
        XCTAssertEqual(explicit.exitCode, 0, explicit.stderr)
        XCTAssertTrue(explicit.stdout.hasPrefix("\(path): OK ("), explicit.stdout)
    }

    func testDefaultConfigurationPath() throws {
        let defaultPath = "/etc/secproxy/secproxy.toml"
        try XCTSkipIf(FileManager.default.fileExists(atPath: defaultPath), "\(defaultPath) exists on this machine")
        let result = try runSecproxy(["--check-config"])
        XCTAssertEqual(result.exitCode, 1)
        XCTAssertTrue(result.stderr.contains("\(defaultPath): error: cannot read configuration: "), result.stderr)
    }

    func testDaemonWithInvalidConfigExitsOneWithTheSameDiagnostics() throws {
        let text = """
            [defaults]
            idle_timout = "5m"

            [[listener]]
            name = "web"
            listen = "127.0.0.1:0"
            mode = "plain"
            backends = []
            """
        let path = try writeConfig(text)
        let checked = try checkConfig(path)
        XCTAssertEqual(checked.exitCode, 1)
        let diagnostics = checked.stderrLines.filter { $0.hasPrefix("\(path):") }
        XCTAssertGreaterThanOrEqual(diagnostics.count, 2, checked.stderr)

        let daemon = try ProxyProcess(configPath: path)
        daemons.append(daemon)
        try daemon.start()
        XCTAssertEqual(try daemon.waitForExitCode(timeout: 15), 1, daemon.outputTail())
        let stderr = daemon.process.stderrLines
        for diagnostic in diagnostics {
            XCTAssertTrue(stderr.contains(diagnostic), "daemon stderr lacks '\(diagnostic)':\n\(daemon.outputTail())")
        }
        XCTAssertFalse(stderr.contains { ProxyProcess.parseLogLine($0)["msg"] == "ready" })
    }

    func testDaemonExitsThreeWhenItsPortIsTaken() throws {
        let occupied = try OccupiedPort()
        let path = try writeConfig(plainConfig(listen: occupied.address))
        let daemon = try ProxyProcess(configPath: path)
        daemons.append(daemon)
        try daemon.start()
        XCTAssertEqual(try daemon.waitForExitCode(timeout: 15), 3, daemon.outputTail())
        withExtendedLifetime(occupied) {}
    }

    func testDaemonStartsLogsListeningAndReadyAndStopsOnSIGINT() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let path = try writeConfig(plainConfig(listen: "127.0.0.1:0", backend: echo.address))
        let daemon = try ProxyProcess(configPath: path)
        daemons.append(daemon)
        try daemon.start()
        try daemon.waitUntilReady(timeout: 15)
        let listening = try daemon.address(of: "raw")
        XCTAssertEqual(listening.host, "127.0.0.1")
        XCTAssertNotEqual(listening.port, 0)
        XCTAssertEqual(listening.mode, "plain")
        for event in daemon.events where !event.isEmpty {
            XCTAssertNotNil(event["ts"], "\(event)")
            XCTAssertNotNil(event["level"], "\(event)")
            XCTAssertNotNil(event["msg"], "\(event)")
        }
        daemon.send(signal: SIGINT)
        XCTAssertEqual(try daemon.waitForExitCode(timeout: 10), 0, daemon.outputTail())
        XCTAssertTrue(daemon.events.contains { $0["msg"] == "stopped" }, daemon.outputTail())
    }

    /// One plain listener named `raw`.
    private func plainConfig(listen: String, backend: String = "127.0.0.1:9") -> String {
        """
        [server]
        log_level = "info"
        drain_timeout = "1s"

        [[listener]]
        name = "raw"
        listen = "\(listen)"
        mode = "plain"
        backends = ["\(backend)"]
        """
    }
}
