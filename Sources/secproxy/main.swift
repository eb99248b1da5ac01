import ArgumentParser
import Foundation
import SecProxy

/// `secproxy [-c PATH] [--check-config [--format text|json]]`; exit codes per SPEC §1, mapped here only.
struct SecProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secproxy",
        abstract: "TLS-terminating secure socket proxy.",
        discussion: """
            Runs in the foreground until SIGTERM/SIGINT (systemd supervises); SIGHUP reloads the configuration.
            Exit codes: 0 clean stop or valid config, 1 invalid config, 2 bad command line, 3 runtime failure.
            """,
        version: "secproxy \(SecProxyVersion.string)"
    )

    @Option(
        name: [.short, .customLong("config")],
        help: "Configuration file (default: $SECPROXY_CONFIG, else /etc/secproxy/secproxy.toml)."
    )
    var config: String?

    @Flag(name: .customLong("check-config"), help: "Validate the configuration as the daemon would load it, and exit.")
    var checkConfig = false

    @Option(help: "Output of --check-config: text or json.")
    var format: CheckConfig.Format = .text

    var configPath: String {
        if let config { return config }
        if let fromEnvironment = ProcessInfo.processInfo.environment["SECPROXY_CONFIG"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return "/etc/secproxy/secproxy.toml"
    }

    func execute() async -> Int32 {
        if checkConfig {
            let report = CheckConfig.run(path: configPath, format: format)
            FileHandle.standardOutput.write(Data(report.stdout.utf8))
            FileHandle.standardError.write(Data(report.stderr.utf8))
            return report.exitCode
        }
        return await Daemon.run(configPath: configPath)
    }
}

extension CheckConfig.Format: ExpressibleByArgument {}

do {
    let command = try SecProxyCommand.parse(Array(CommandLine.arguments.dropFirst()))
    exit(await command.execute())
} catch {
    if SecProxyCommand.exitCode(for: error) == .success {
        print(SecProxyCommand.fullMessage(for: error))
        exit(0)
    }
    let message = SecProxyCommand.fullMessage(for: error)
    FileHandle.standardError.write(Data("secproxy: \(message)\n".utf8))
    exit(2)
}
