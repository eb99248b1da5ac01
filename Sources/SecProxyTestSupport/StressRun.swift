import Foundation

/// One transfer of a stress run, as `stress.py` reports it.
public struct StressTransfer: Decodable, Sendable, CustomStringConvertible {
    public var id: Int
    public var target: String?
    public var localPort: Int?
    public var c2bPlanned: Int
    public var b2cPlanned: Int
    /// Bytes the client sent (its 8-byte transfer id included) and the backend received.
    public var c2bSent: Int
    public var c2bReceived: Int
    /// Bytes the backend sent and the client received.
    public var b2cSent: Int
    public var b2cReceived: Int
    public var clientFinDelay: Double
    public var backendFinDelay: Double
    public var clientPace: Double
    public var backendPace: Double
    public var clientEof: String?
    public var backendEof: String?
    public var errors: [String]
    public var timeout: Bool
    public var ok: Bool

    public var description: String {
        "#\(id) \(target ?? "?") port=\(localPort ?? 0) c2b \(c2bReceived)/\(c2bSent) b2c \(b2cReceived)/\(b2cSent)"
            + " fin c=\(clientFinDelay) b=\(backendFinDelay) pace c=\(clientPace) b=\(backendPace)"
            + " eof c=\(clientEof ?? "-") b=\(backendEof ?? "-")" + (timeout ? " TIMEOUT" : "")
            + (errors.isEmpty ? "" : " errors=\(errors)")
    }
}

/// The totals of a stress run.
public struct StressSummary: Decodable, Sendable {
    public var seed: UInt64
    public var transfers: Int
    public var planned: Int
    public var bytesChecked: Int
    public var bytesExpected: Int
    public var bytesLost: Int
    public var failures: Int
    public var elapsedS: Double
}

/// A running `stress.py`: it has started its backend (`backendPort`) and waits for `go(targets:)`.
public final class StressRun: @unchecked Sendable {
    public let process: Subprocess
    public let seed: UInt64
    /// The port of the script's backend on 127.0.0.1.
    public let backendPort: Int
    private let timeout: TimeInterval

    init(python: String, script: String, seed: UInt64, transfers: Int, concurrency: Int, timeout: TimeInterval)
        throws
    {
        self.seed = seed
        self.timeout = timeout
        let options: [String: Any] = [
            "seed": seed, "transfers": transfers, "concurrency": concurrency, "timeout": timeout,
        ]
        process = Subprocess(executable: python, arguments: ["-u", script, try PythonClient.encode(options)])
        try process.start()
        let line = try process.waitForLine(in: .stdout, timeout: 10, "the stress backend's port") {
            $0.contains("backend_port")
        }
        struct Hello: Decodable { var backendPort: Int }
        backendPort = try PythonClient.decode(Hello.self, line, from: "stress.py").backendPort
    }

    deinit { process.terminate(grace: 1) }

    /// Starts the transfers, spread over `targets` (each: `name`, `port`, `tls`, and for TLS `server_name`, `cafile`).
    public func go(targets: [[String: Any]]) throws {
        try process.write(PythonClient.encode(["targets": targets]) + "\n")
    }

    /// Waits for the run to end and returns its summary and every transfer.
    public func wait() throws -> (summary: StressSummary, transfers: [StressTransfer]) {
        let status = try process.waitForExit(timeout: timeout + 30)
        guard status == .exited(0),
            let summaryLine = process.stdoutLines.last(where: { $0.hasPrefix("{\"summary\"") })
        else {
            throw SubprocessError("stress.py failed (\(status)), seed \(seed):\n\(process.outputTail())")
        }
        struct Wrapper: Decodable { var summary: StressSummary }
        let summary = try PythonClient.decode(Wrapper.self, summaryLine, from: "stress.py").summary
        let transfers = try process.stdoutLines.filter { $0.hasPrefix("{\"id\"") }.map {
            try PythonClient.decode(StressTransfer.self, $0, from: "stress.py")
        }
        return (summary, transfers)
    }
}

extension PythonClient {
    /// Starts a seeded stress run of `transfers` transfers, `concurrency` at a time, within `timeout` seconds.
    public func stress(seed: UInt64, transfers: Int, concurrency: Int = 8, timeout: TimeInterval = 300) throws
        -> StressRun
    {
        try StressRun(
            python: python, script: scriptPath("stress.py"), seed: seed, transfers: transfers,
            concurrency: concurrency, timeout: timeout
        )
    }
}
