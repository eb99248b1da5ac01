import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes an attack connection sends.
public enum AttackPayload: Sendable {
    /// Nothing: a silent connection.
    case none
    /// These bytes, written as hex (spaces allowed).
    case hex(String)
    /// This text (UTF-8).
    case text(String)
    /// The first flight of a real TLS client (Python's `ssl`, TLS 1.2–1.3 unless `maxVersion` is "1.2"): a
    /// ClientHello; re-framed into TLS records of one byte each with `oneByteRecords`; cut to its first
    /// `truncatedTo` bytes when given.
    case clientHello(oneByteRecords: Bool = false, truncatedTo: Int? = nil, maxVersion: String? = nil)

    var json: [String: Any] {
        switch self {
        case .none:
            return [:]
        case .hex(let hex):
            return ["hex": hex]
        case .text(let text):
            return ["text": text]
        case .clientHello(let oneByteRecords, let truncatedTo, let maxVersion):
            var object: [String: Any] = ["hello": true, "records1": oneByteRecords]
            if let truncatedTo { object["truncate"] = truncatedTo }
            if let maxVersion { object["max_version"] = maxVersion }
            return object
        }
    }
}

/// What a `send` attack does once its payload is written.
public enum AttackEnding: String, Sendable {
    /// Keep the connection open and read until the server closes it (or the timeout).
    case wait
    /// Send a FIN (SHUT_WR), then read until the server closes it.
    case fin
    /// Close at once with an RST (SO_LINGER 0).
    case rst
}

/// How one attack connection ended, seen from the client.
public struct AttackConnection: Decodable, Sendable, CustomStringConvertible {
    /// The client's own port (to find its line in the proxy log).
    public var localPort: Int
    /// From the connect to the server's FIN or RST; nil when the server never closed it.
    public var closedAfterMs: Double?
    /// `fin` or `reset`.
    public var how: String?
    /// Bytes the server sent.
    public var bytesReceived: Int
    /// The first 64 bytes received, as hex (e.g. `1503030002022f`: a TLS alert).
    public var receivedHex: String

    /// `closedAfterMs` in seconds.
    public var closedAfter: TimeInterval? { closedAfterMs.map { $0 / 1000 } }

    public var description: String {
        "port \(localPort): closed after \(closedAfterMs.map { "\($0) ms" } ?? "never") (\(how ?? "-")), "
            + "\(bytesReceived) bytes received \(receivedHex.prefix(20))"
    }
}

/// The outcome of `AttackClient.send`.
public struct AttackSendResult: Decodable, Sendable, CustomStringConvertible {
    public var bytesSent: Int
    /// Size of the whole payload.
    public var totalBytes: Int
    /// A write failed (the server closed first).
    public var writeError: String?
    public var localPort: Int
    public var closedAfterMs: Double?
    public var how: String?
    public var bytesReceived: Int
    public var receivedHex: String

    /// `closedAfterMs` in seconds.
    public var closedAfter: TimeInterval? { closedAfterMs.map { $0 / 1000 } }

    /// The connection as an `AttackConnection`.
    public var connection: AttackConnection {
        AttackConnection(
            localPort: localPort,
            closedAfterMs: closedAfterMs,
            how: how,
            bytesReceived: bytesReceived,
            receivedHex: receivedHex
        )
    }

    public var description: String {
        "sent \(bytesSent)/\(totalBytes) bytes\(writeError.map { " (write error: \($0))" } ?? ""); \(connection)"
    }
}

/// The `opened` report of a `hold` attack.
public struct AttackOpened: Decodable, Sendable {
    /// Connections established.
    public var opened: Int
    /// Connects that failed.
    public var failed: Int
    /// The first few connect errors.
    public var errors: [String]
    /// Time to open them all.
    public var elapsedMs: Double
    /// The client ports, in connect order.
    public var localPorts: [Int]
}

/// The final report of a `hold` attack.
public struct AttackHoldResult: Decodable, Sendable {
    public var opened: Int
    public var failed: Int
    public var errors: [String]
    /// Every connection, in connect order.
    public var connections: [AttackConnection]
}

/// The outcome of `AttackClient.burst`.
public struct AttackBurstResult: Decodable, Sendable {
    /// Time to open all the connections.
    public var openedMs: Double
    /// Per connection, in connect order: `admitted` (the text came back), `closed` (the server closed it),
    /// `timeout` or `connect_failed`.
    public var results: [String]
    public var admitted: Int
    public var closed: Int
}

/// The outcome of `AttackClient.echo`.
public struct AttackEchoResult: Decodable, Sendable, CustomStringConvertible {
    /// Connected, handshaken (TLS) and the text came back.
    public var ok: Bool
    /// `timeout`, `refused`, `reset`, `eof` or `error: …`.
    public var error: String?
    public var localPort: Int?
    /// From the start of the connect to the end of the handshake.
    public var handshakeMs: Double?
    /// From the send to the last byte of the echo.
    public var echoMs: Double?
    public var version: String?
    /// With `hold`: from the start of the hold to the server's close, seen through the TCP state.
    public var closedAfterMs: Double?
    /// `fin` or `reset`.
    public var how: String?

    public var description: String {
        "AttackEchoResult(ok: \(ok), error: \(error ?? "-"), handshake: \(handshakeMs ?? -1) ms, "
            + "echo: \(echoMs ?? -1) ms, closed after hold: \(closedAfterMs ?? -1) ms \(how ?? "")"
    }
}

/// One run of the attack script in the background; its JSON lines are read from stdout.
public final class AttackRun: @unchecked Sendable {
    /// The python process (stopped by `cancel()`).
    public let process: Subprocess
    private let timeout: TimeInterval

    init(process: Subprocess, timeout: TimeInterval) {
        self.process = process
        self.timeout = timeout
    }

    /// Waits for the progress line with `"event": "NAME"` and decodes it.
    public func waitForEvent<T: Decodable>(_ name: String, as type: T.Type, timeout: TimeInterval = 15) throws -> T {
        let marker = "\"event\": \"\(name)\""
        let line = try process.waitForLine(in: .stdout, timeout: timeout, "the attack script's '\(name)' event") {
            $0.contains(marker)
        }
        return try AttackClient.decode(type, line)
    }

    /// Waits for the script's final (`done`) line and decodes it; kills the script when it does not come.
    public func result<T: Decodable>(as type: T.Type) throws -> T {
        do {
            return try waitForEvent("done", as: type, timeout: timeout)
        } catch {
            process.terminate(grace: 1)
            throw error
        }
    }

    /// Tells a holding script to stop holding (one line on stdin, then end of input).
    public func release() {
        try? process.write("release\n")
        process.closeStdin()
    }

    /// Kills the script (idempotent).
    public func cancel() { process.terminate(grace: 1) }
}

/// Runs `attack.py` (abusive clients) as subprocesses: trickles, malformed records, floods of silent connections,
/// bursts, resets. Every process it starts is recorded and ended by `stopAll()`.
public final class AttackClient: @unchecked Sendable {
    /// The python3 interpreter.
    public let python: String
    private let script: String
    private let lock = NSLock()
    private var runs: [AttackRun] = []

    /// Writes the script into `directory`.
    public init(directory: TemporaryDirectory) throws {
        guard let python = Subprocess.which("python3") else {
            throw SubprocessError("python3 is not installed (apt-get install python3)")
        }
        self.python = python
        self.script = try directory.write("attack/attack.py", AttackScripts.attack)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ line: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try decoder.decode(type, from: Data(line.utf8))
        } catch {
            throw SubprocessError("cannot decode the attack script's line as \(type): \(error)\n\(line.prefix(2000))")
        }
    }

    /// Starts the script with `options` (a `mode` and its settings).
    /// - Parameter timeout: how long `result` waits for the final line.
    public func start(_ options: [String: Any], timeout: TimeInterval) throws -> AttackRun {
        let arguments = String(
            decoding: try JSONSerialization.data(withJSONObject: options, options: [.sortedKeys]),
            as: UTF8.self
        )
        let process = Subprocess(executable: python, arguments: ["-u", script, arguments])
        try process.start()
        let run = AttackRun(process: process, timeout: timeout)
        lock.withLock { runs.append(run) }
        return run
    }

    /// Ends every script still running (for tearDown).
    public func stopAll() {
        let all = lock.withLock { () -> [AttackRun] in
            defer { runs = [] }
            return runs
        }
        for run in all { run.cancel() }
    }

    // MARK: - Modes

    /// One connection that writes `payload`, `step` bytes every `intervalMs` (all at once when `step` is nil), then
    /// does `then`; started in the background, returned once connected (`result(as: AttackSendResult.self)`).
    /// - Parameters:
    ///   - waitForResponse: before `then`, wait until the server sent something (e.g. its ServerHello).
    ///   - timeout: the script's own deadline.
    public func startSend(
        host: String = "127.0.0.1",
        port: Int,
        payload: AttackPayload,
        step: Int? = nil,
        intervalMs: Int = 0,
        then: AttackEnding = .wait,
        waitForResponse: Bool = false,
        timeout: TimeInterval = 10
    ) throws -> AttackRun {
        var options: [String: Any] = [
            "mode": "send", "host": host, "port": port, "interval_ms": intervalMs, "then": then.rawValue,
            "wait_response": waitForResponse, "timeout": timeout,
        ]
        if let step { options["step"] = step }
        options.merge(payload.json) { _, new in new }
        let run = try start(options, timeout: timeout + 10)
        _ = try run.waitForEvent("connected", as: AttackConnected.self)
        return run
    }

    /// `startSend` run to its end.
    public func send(
        host: String = "127.0.0.1",
        port: Int,
        payload: AttackPayload,
        step: Int? = nil,
        intervalMs: Int = 0,
        then: AttackEnding = .wait,
        waitForResponse: Bool = false,
        timeout: TimeInterval = 10
    ) throws -> AttackSendResult {
        try startSend(
            host: host,
            port: port,
            payload: payload,
            step: step,
            intervalMs: intervalMs,
            then: then,
            waitForResponse: waitForResponse,
            timeout: timeout
        ).result(as: AttackSendResult.self)
    }

    /// Opens `count` connections, each writing `payload` once, and watches how each ends; returns once they are
    /// open (`waitForEvent("opened")` was seen), with that report.
    /// - Parameters:
    ///   - read: read what the server sends (false: never read; the end is seen in the TCP state).
    ///   - receiveBuffer: SO_RCVBUF of each connection (small for clients that never read).
    ///   - source: the local address to connect from (e.g. `127.0.0.2`, another client IP on loopback).
    ///   - holdUntilReleased: keep the connections open until `release()` (else the run ends when the server closed
    ///     them all, or at `timeout`).
    ///   - reset: close what is left with RST.
    public func hold(
        host: String = "127.0.0.1",
        port: Int,
        count: Int,
        payload: AttackPayload = .none,
        read: Bool = true,
        receiveBuffer: Int? = nil,
        source: String? = nil,
        holdUntilReleased: Bool = false,
        reset: Bool = false,
        timeout: TimeInterval = 10
    ) throws -> (run: AttackRun, opened: AttackOpened) {
        var options: [String: Any] = [
            "mode": "hold", "host": host, "port": port, "count": count, "read": read, "hold": holdUntilReleased,
            "reset": reset, "timeout": timeout,
        ]
        if let receiveBuffer { options["rcvbuf"] = receiveBuffer }
        if let source { options["source"] = source }
        options.merge(payload.json) { _, new in new }
        let run = try start(options, timeout: timeout + 15)
        let opened = try run.waitForEvent("opened", as: AttackOpened.self, timeout: 30)
        return (run, opened)
    }

    /// Opens `count` plain connections back to back, then sends `text` on each: admitted when it comes back
    /// (an echo backend behind the proxy), refused when the server closed the connection.
    public func burst(
        host: String = "127.0.0.1",
        port: Int,
        count: Int,
        source: String? = nil,
        text: String = "ping"
    ) throws -> AttackBurstResult {
        var options: [String: Any] = ["mode": "burst", "host": host, "port": port, "count": count, "text": text]
        if let source { options["source"] = source }
        return try start(options, timeout: 30).result(as: AttackBurstResult.self)
    }

    /// A well-behaved client from `source`: connect, TLS handshake (when `tls`), send `text`, read it back.
    public func echo(
        host: String = "127.0.0.1",
        port: Int,
        tls: Bool,
        source: String? = nil,
        text: String = "ping",
        timeout: TimeInterval = 5
    ) throws -> AttackEchoResult {
        var options: [String: Any] = [
            "mode": "echo", "host": host, "port": port, "tls": tls, "text": text, "timeout": timeout,
        ]
        if let source { options["source"] = source }
        return try start(options, timeout: timeout + 10).result(as: AttackEchoResult.self)
    }

    /// `count` TLS clients one after the other, each resetting (RST) a random 0…`maxDelayMs` after its handshake
    /// completed: they go away while the proxy is still dialling the backend. Returns their client ports.
    public func handshakeThenReset(
        host: String = "127.0.0.1", port: Int, count: Int, maxDelayMs: Double = 3, seed: Int = 1
    ) throws -> AttackResetResult {
        let options: [String: Any] = [
            "mode": "tls_reset", "host": host, "port": port, "count": count, "max_delay_ms": maxDelayMs,
            "seed": seed,
        ]
        return try start(options, timeout: 60).result(as: AttackResetResult.self)
    }

    /// A client that handshakes (and echoes `text` when not empty), then never reads again; returns once it got
    /// there. Its final line (`result(as: AttackEchoResult.self)`) tells when the server closed it.
    /// - Parameter receiveBuffer: SO_RCVBUF, small so that the kernel does not read for it.
    public func startNonReader(
        host: String = "127.0.0.1",
        port: Int,
        tls: Bool,
        text: String = "",
        receiveBuffer: Int = 4096,
        holdTimeout: TimeInterval = 30
    ) throws -> AttackRun {
        let options: [String: Any] = [
            "mode": "echo", "host": host, "port": port, "tls": tls, "text": text, "rcvbuf": receiveBuffer,
            "hold": true, "hold_timeout": holdTimeout, "timeout": 5,
        ]
        let run = try start(options, timeout: holdTimeout + 10)
        do {
            _ = try run.waitForEvent("connected", as: AttackConnected.self)
        } catch {
            throw SubprocessError("the non-reading client did not connect: \(error)\n\(run.process.outputTail())")
        }
        return run
    }
}

/// The outcome of `AttackClient.handshakeThenReset`.
public struct AttackResetResult: Decodable, Sendable {
    /// The client ports, in connect order.
    public var localPorts: [Int]
    /// The first few failures (a refused handshake, …).
    public var errors: [String]
}

/// The `connected` event of a run.
public struct AttackConnected: Decodable, Sendable {
    public var localPort: Int?
}

/// A TCP echo backend (a Python process) that misbehaves on command: a chunk containing `RESET` makes it close
/// that connection with RST, one containing `FIN` makes it send a FIN and close; `kill()` ends the whole process
/// (SIGKILL, as a crash would).
public final class MisbehavingBackend: @unchecked Sendable {
    /// The python process.
    public let run: AttackRun
    /// The bound port on 127.0.0.1.
    public let port: Int

    /// Starts it on 127.0.0.1 (port 0 unless given).
    /// - Parameter holdAccepts: keep its accept queue full, so that a connect to it hangs (the kernel drops the
    ///   SYNs) until `startAccepting()`; the connect then completes at a SYN retransmission (about 1 s after it
    ///   began, or 3 s).
    public init(attack: AttackClient, port: Int = 0, holdAccepts: Bool = false) throws {
        run = try attack.start(["mode": "backend", "port": port, "hold_accepts": holdAccepts], timeout: 600)
        struct Listening: Decodable { var port: Int }
        self.port = try run.waitForEvent("listening", as: Listening.self).port
    }

    /// With `holdAccepts`: starts accepting (and echoing).
    public func startAccepting() throws {
        try run.process.write("go\n")
        struct Accepting: Decodable {}
        _ = try run.waitForEvent("accepting", as: Accepting.self, timeout: 5)
    }

    /// `127.0.0.1:PORT`, as written in a config's `backends`.
    public var address: String { "127.0.0.1:\(port)" }

    /// Connections accepted so far.
    public var connectionCount: Int {
        run.process.stdoutLines.filter { $0.contains("\"event\": \"accepted\"") }.count
    }

    /// SIGKILL (a crash: the kernel closes its sockets).
    public func kill() {
        run.process.send(signal: SIGKILL)
        _ = try? run.process.waitForExit(timeout: 5)
    }

    /// Ends it (idempotent).
    public func stop() { run.cancel() }
}
