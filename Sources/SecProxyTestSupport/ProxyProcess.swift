import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The address a listener of the proxy reported in its `msg=listening` line.
public struct ListenerAddress: Equatable, Sendable, CustomStringConvertible {
    /// The listener's name.
    public var name: String
    /// The bound host, without brackets (`127.0.0.1`, `::1`).
    public var host: String
    /// The bound port.
    public var port: Int
    /// `tls` or `plain`.
    public var mode: String

    /// `HOST:PORT`, IPv6 in brackets.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Splits `127.0.0.1:8443` or `[::1]:8443`.
    public static func split(_ address: String) -> (host: String, port: Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            return nil
        }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }
}

/// The `secproxy` binary run as a child process, with its log lines parsed.
public final class ProxyProcess: @unchecked Sendable {
    /// The underlying child process (stdout/stderr lines, signals, exit).
    public let process: Subprocess
    /// The config path passed with `-c`, if any.
    public let configPath: String?

    /// The `secproxy` executable: `$SECPROXY_BIN` when set, else the `secproxy` file in the folder of the running
    /// test bundle (`.build/<triple>/debug/`).
    public static func binaryPath() throws -> String {
        if let fromEnvironment = ProcessInfo.processInfo.environment["SECPROXY_BIN"], !fromEnvironment.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: fromEnvironment) else {
                throw SubprocessError("SECPROXY_BIN=\(fromEnvironment) is not an executable file")
            }
            return fromEnvironment
        }
        var folders: [String] = []
        if let executable = Bundle.main.executableURL { folders.append(executable.deletingLastPathComponent().path) }
        folders.append(Bundle.main.bundleURL.deletingLastPathComponent().path)
        let argument0 = CommandLine.arguments.first ?? ""
        let absolute =
            argument0.hasPrefix("/")
            ? argument0 : FileManager.default.currentDirectoryPath + "/" + argument0
        folders.append((absolute as NSString).deletingLastPathComponent)
        if let selfExe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            folders.append((selfExe as NSString).deletingLastPathComponent)
        }
        for folder in folders {
            // On macOS the bundle is `X.xctest/Contents/MacOS/X`: look next to the bundle too.
            var candidates = [folder + "/secproxy"]
            if let range = folder.range(of: ".xctest/") {
                candidates.append(
                    ((String(folder[..<range.lowerBound]) + ".xctest") as NSString).deletingLastPathComponent
                        + "/secproxy"
                )
            }
            for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate) {
                return (candidate as NSString).standardizingPath
            }
        }
        throw SubprocessError(
            "cannot find the secproxy binary next to the test bundle (looked in \(folders)); build it "
                + "(`swift build`) or set SECPROXY_BIN"
        )
    }

    /// Prepares `secproxy [-c configPath] arguments…` (not started).
    /// - Parameters:
    ///   - configPath: passed as `-c` when not nil.
    ///   - arguments: further arguments, after `-c`.
    ///   - environment: changes to the inherited environment (nil removes a variable). `SECPROXY_CONFIG` and
    ///     `NOTIFY_SOCKET` are removed unless given here.
    public init(
        configPath: String?,
        arguments: [String] = [],
        environment: [String: String?] = [:],
        currentDirectory: String? = nil
    ) throws {
        self.configPath = configPath
        var env: [String: String?] = [
            "SECPROXY_CONFIG": nil, "NOTIFY_SOCKET": nil, "LISTEN_FDS": nil, "LISTEN_PID": nil,
            "LISTEN_FDNAMES": nil, "WATCHDOG_USEC": nil, "WATCHDOG_PID": nil,
        ]
        for (key, value) in environment { env[key] = value }
        let args = (configPath.map { ["-c", $0] } ?? []) + arguments
        self.process = Subprocess(
            executable: try Self.binaryPath(),
            arguments: args,
            environment: env,
            currentDirectory: currentDirectory
        )
    }

    /// Starts the daemon with `configPath` and waits for its `msg=ready` line.
    public static func launch(
        configPath: String,
        arguments: [String] = [],
        environment: [String: String?] = [:],
        readyTimeout: TimeInterval = 15
    ) throws -> ProxyProcess {
        let proxy = try ProxyProcess(configPath: configPath, arguments: arguments, environment: environment)
        try proxy.start()
        do {
            try proxy.waitUntilReady(timeout: readyTimeout)
        } catch {
            proxy.terminate()
            throw error
        }
        return proxy
    }

    /// Starts the process.
    public func start() throws { try process.start() }

    /// The child's PID.
    public var pid: Int32 { process.pid }

    // MARK: - Log lines

    /// Every stderr line parsed (logfmt, or JSON when the line starts with `{`); unparsable lines give `[:]`.
    public var events: [[String: String]] { process.stderrLines.map(Self.parseLogLine) }

    /// Parses one log line, logfmt or JSON (values turned to strings, null to "").
    public static func parseLogLine(_ line: String) -> [String: String] {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("{"),
            let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any]
        {
            var fields: [String: String] = [:]
            for (key, value) in object {
                switch value {
                case is NSNull: fields[key] = ""
                case let string as String: fields[key] = string
                case let number as NSNumber:
                    // Booleans come back as NSNumber with the `char` type code.
                    if String(cString: number.objCType) == "c" {
                        fields[key] = number.boolValue ? "true" : "false"
                    } else {
                        fields[key] = number.stringValue
                    }
                case let bool as Bool: fields[key] = bool ? "true" : "false"
                default: fields[key] = "\(value)"
                }
            }
            return fields
        }
        return Logfmt.parse(line)
    }

    /// The parsed `msg="connection closed"` lines so far, in order.
    public var connectionLogs: [[String: String]] { events.filter { $0["msg"] == "connection closed" } }

    /// The raw `msg="connection closed"` lines so far.
    public var connectionLogLines: [String] {
        process.stderrLines.filter { Self.parseLogLine($0)["msg"] == "connection closed" }
    }

    /// Waits until at least `count` connection lines were logged and returns them all.
    @discardableResult
    public func waitForConnectionLogs(count: Int, timeout: TimeInterval = 10) throws -> [[String: String]] {
        try waitForLogs(count: count, timeout: timeout, "\(count) 'connection closed' line(s)") {
            $0["msg"] == "connection closed"
        }
    }

    /// Waits until at least `count` lines satisfy `predicate` and returns them (all of them, in order).
    @discardableResult
    public func waitForLogs(
        count: Int = 1,
        timeout: TimeInterval = 10,
        _ description: String,
        where predicate: ([String: String]) -> Bool
    ) throws -> [[String: String]] {
        var matching: [[String: String]] = []
        do {
            try waitUntil(timeout: timeout, description) {
                matching = events.filter(predicate)
                return matching.count >= count
            }
        } catch {
            throw DeadlineExceeded("\(error)\n\(process.outputTail(60))")
        }
        return matching
    }

    /// Waits for the first log line whose `msg` is `message` and returns its fields.
    @discardableResult
    public func waitForMessage(_ message: String, timeout: TimeInterval = 10) throws -> [String: String] {
        let line = try process.waitForLine(in: .stderr, timeout: timeout, "msg=\(message)") {
            Self.parseLogLine($0)["msg"] == message
        }
        return Self.parseLogLine(line)
    }

    /// Waits for `msg=ready` (all listeners bound).
    public func waitUntilReady(timeout: TimeInterval = 15) throws {
        try waitForMessage("ready", timeout: timeout)
    }

    /// The listeners reported by `msg=listening` lines so far, by name.
    public var listeners: [String: ListenerAddress] {
        var result: [String: ListenerAddress] = [:]
        for event in events where event["msg"] == "listening" {
            guard let name = event["listener"], let address = event["address"],
                let (host, port) = ListenerAddress.split(address)
            else { continue }
            result[name] = ListenerAddress(name: name, host: host, port: port, mode: event["mode"] ?? "")
        }
        return result
    }

    /// The bound address of listener `name`; fails with the log when it was not reported.
    public func address(of name: String) throws -> ListenerAddress {
        guard let address = listeners[name] else {
            throw SubprocessError("listener '\(name)' reported no 'msg=listening' line\n\(process.outputTail())")
        }
        return address
    }

    /// The bound port of listener `name`.
    public func port(of name: String) throws -> Int { try address(of: name).port }

    // MARK: - Lifetime

    /// Sends `signal` to the daemon by PID.
    public func send(signal: Int32) { process.send(signal: signal) }

    /// SIGTERM, then waits for the exit; returns how it ended.
    @discardableResult
    public func stop(timeout: TimeInterval = 10) throws -> ExitStatus {
        process.send(signal: SIGTERM)
        return try process.waitForExit(timeout: timeout)
    }

    /// Waits for the exit and returns its code (fails when killed by a signal or still running).
    public func waitForExitCode(timeout: TimeInterval = 10) throws -> Int32 {
        try process.waitForExitCode(timeout: timeout)
    }

    /// Ends the daemon whatever its state (SIGTERM, SIGKILL after a grace period). For tearDown.
    public func terminate(grace: TimeInterval = 3) { process.terminate(grace: grace) }

    /// The last lines of the daemon's output, for failure messages.
    public func outputTail(_ count: Int = 40) -> String { process.outputTail(count) }
}

/// Runs the `secproxy` binary to completion (for `--version`, `--check-config`, …).
public func runSecproxy(
    _ arguments: [String],
    environment: [String: String?] = [:],
    currentDirectory: String? = nil,
    timeout: TimeInterval = 30
) throws -> Subprocess.Result {
    var env: [String: String?] = ["SECPROXY_CONFIG": nil, "NOTIFY_SOCKET": nil]
    for (key, value) in environment { env[key] = value }
    return try Subprocess.run(
        try ProxyProcess.binaryPath(),
        arguments,
        environment: env,
        currentDirectory: currentDirectory,
        timeout: timeout
    )
}
