import Foundation

/// How a test client connects: address, plain or TLS, and the TLS settings it offers.
public struct ClientOptions: Sendable {
    /// Server host.
    public var host: String
    /// Server port.
    public var port: Int
    /// TLS (true) or plain TCP.
    public var tls: Bool
    /// SNI sent (and name verified when `caFile` is set); nil sends none.
    public var serverName: String?
    /// Verify the server against this CA; nil: no verification.
    public var caFile: String?
    /// "1.2" or "1.3".
    public var minVersion: String?
    /// "1.2" or "1.3".
    public var maxVersion: String?
    /// TLS 1.2 cipher list (OpenSSL syntax).
    public var ciphers: String?
    /// ALPN protocols offered.
    public var alpn: [String]?
    /// Client certificate (mTLS).
    public var certFile: String?
    /// Client key (mTLS).
    public var keyFile: String?

    public init(
        host: String = "127.0.0.1",
        port: Int,
        tls: Bool = true,
        serverName: String? = nil,
        caFile: String? = nil,
        minVersion: String? = nil,
        maxVersion: String? = nil,
        ciphers: String? = nil,
        alpn: [String]? = nil,
        certFile: String? = nil,
        keyFile: String? = nil
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.serverName = serverName
        self.caFile = caFile
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.ciphers = ciphers
        self.alpn = alpn
        self.certFile = certFile
        self.keyFile = keyFile
    }

    /// A TLS client to `address`.
    public static func tls(
        _ address: ListenerAddress,
        serverName: String? = nil,
        caFile: String? = nil
    ) -> ClientOptions {
        ClientOptions(host: address.host, port: address.port, tls: true, serverName: serverName, caFile: caFile)
    }

    /// A plain TCP client to `address`.
    public static func plain(_ address: ListenerAddress) -> ClientOptions {
        ClientOptions(host: address.host, port: address.port, tls: false)
    }

    var json: [String: Any] {
        var object: [String: Any] = ["host": host, "port": port, "tls": tls]
        if let serverName { object["server_name"] = serverName }
        if let caFile { object["cafile"] = caFile }
        if let minVersion { object["min_version"] = minVersion }
        if let maxVersion { object["max_version"] = maxVersion }
        if let ciphers { object["ciphers"] = ciphers }
        if let alpn { object["alpn"] = alpn }
        if let certFile { object["cert"] = certFile }
        if let keyFile { object["key"] = keyFile }
        return object
    }
}

/// What the client sends.
public enum Payload: Sendable {
    /// This text (UTF-8).
    case text(String)
    /// This many random bytes.
    case random(Int)
    /// This many bytes of the `streamPattern` (byte i = i % 251).
    case pattern(Int)
}

/// What the client does once everything is sent.
public enum AfterSend: String, Sendable {
    /// TLS close_notify (in TLS mode) and TCP FIN, then read until the server closes.
    case halfClose = "half_close"
    /// Keep the connection open and read until the server closes.
    case waitForEOF = "wait_eof"
    /// Read `expectBytes`, then close.
    case close = "close"
}

/// The outcome of `PythonClient.transfer`.
public struct TransferResult: Decodable, Sendable, CustomStringConvertible {
    /// No error (timeouts and handshake failures are errors).
    public var ok: Bool
    public var connected: Bool
    /// The client's own port (to find its connection line in the proxy log).
    public var localPort: Int?
    /// The TLS handshake completed.
    public var handshake: Bool
    /// The negotiated protocol, e.g. `TLSv1.3`.
    public var version: String?
    /// The negotiated cipher, OpenSSL's name.
    public var cipher: String?
    public var alpn: String?
    public var bytesSent: Int
    public var bytesReceived: Int
    public var sha256Sent: String?
    public var sha256Received: String?
    public var elapsedMs: Double
    public var handshakeMs: Double?
    /// How the read side ended: `fin`, `close_notify`, `reset`, `error`, or nil (still open).
    public var eof: String?
    public var error: String?
    /// With `checkPattern`: the bytes received were the stream pattern.
    public var patternOk: Bool?
    /// The first 4 KiB received, as UTF-8.
    public var receivedText: String?
    /// From the last byte sent to the end of the read side.
    public var eofAfterSendMs: Double?
    /// A write failed (the server closed first).
    public var writeError: String?

    public var description: String {
        "TransferResult(ok: \(ok), error: \(error ?? "-"), version: \(version ?? "-"), cipher: \(cipher ?? "-"), "
            + "sent: \(bytesSent), received: \(bytesReceived), eof: \(eof ?? "-"), elapsed: \(elapsedMs) ms)"
    }
}

/// The outcome of `PythonClient.trickle`.
public struct TrickleResult: Decodable, Sendable {
    /// The server closed the connection.
    public var closed: Bool
    /// `fin` or `reset`.
    public var how: String?
    /// From connect to the close.
    public var closedAfterMs: Double?
    public var bytesSent: Int
    public var bytesReceived: Int
    /// Size of the whole ClientHello / text.
    public var totalBytes: Int
    public var error: String?
}

/// Runs the Python client scripts (written to `directory` at first use) as subprocesses with deadlines.
public final class PythonClient: @unchecked Sendable {
    /// The python3 interpreter used.
    public let python: String
    private let directory: String

    /// Writes the scripts to `directory`.
    public init(directory: TemporaryDirectory) throws {
        guard let python = Subprocess.which("python3") else {
            throw SubprocessError("python3 is not installed (apt-get install python3)")
        }
        self.python = python
        self.directory = try directory.makeDirectory("python-clients")
        try Data(PythonScripts.transfer.utf8).write(to: URL(fileURLWithPath: self.directory + "/transfer.py"))
        try Data(PythonScripts.trickle.utf8).write(to: URL(fileURLWithPath: self.directory + "/trickle.py"))
        try Data(PythonScripts.driver.utf8).write(to: URL(fileURLWithPath: self.directory + "/driver.py"))
        try Data(PythonScripts.stress.utf8).write(to: URL(fileURLWithPath: self.directory + "/stress.py"))
    }

    /// Where the script `name` was written.
    func scriptPath(_ name: String) -> String {
        directory + "/" + name
    }

    static func encode(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ line: String, from process: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try decoder.decode(type, from: Data(line.utf8))
        } catch {
            throw SubprocessError("cannot decode the answer of \(process): \(error)\n\(line.prefix(2000))")
        }
    }

    private func transferArguments(
        _ options: ClientOptions,
        payload: Payload,
        after: AfterSend,
        expectBytes: Int?,
        checkPattern: Bool,
        reset: Bool,
        timeout: TimeInterval
    ) throws -> String {
        var object = options.json
        switch payload {
        case .text(let text): object["send_text"] = text
        case .random(let count): object["send_size"] = count
        case .pattern(let count):
            object["send_size"] = count
            object["payload"] = "pattern"
        }
        object["after_send"] = after.rawValue
        if let expectBytes { object["expect_bytes"] = expectBytes }
        if checkPattern { object["check_pattern"] = true }
        if reset { object["reset"] = true }
        object["timeout"] = timeout
        return try Self.encode(object)
    }

    /// One client connection, run to its end: connect, handshake, send `payload` while reading, then `after`.
    /// - Parameters:
    ///   - expectBytes: with `.close`: the number of bytes to read before closing.
    ///   - checkPattern: compare what is received with `streamPattern`.
    ///   - reset: close with RST (SO_LINGER 0) instead of FIN.
    ///   - timeout: the script's own deadline (it reports `error: timeout`); the process is killed 10 s later.
    public func transfer(
        _ options: ClientOptions,
        payload: Payload = .text(""),
        after: AfterSend = .halfClose,
        expectBytes: Int? = nil,
        checkPattern: Bool = false,
        reset: Bool = false,
        timeout: TimeInterval = 30
    ) throws -> TransferResult {
        try startTransfer(
            options,
            payload: payload,
            after: after,
            expectBytes: expectBytes,
            checkPattern: checkPattern,
            reset: reset,
            timeout: timeout
        ).result()
    }

    /// Starts `transfer` in the background; call `result()` on the returned value.
    public func startTransfer(
        _ options: ClientOptions,
        payload: Payload = .text(""),
        after: AfterSend = .halfClose,
        expectBytes: Int? = nil,
        checkPattern: Bool = false,
        reset: Bool = false,
        timeout: TimeInterval = 30
    ) throws -> RunningTransfer {
        let arguments = try transferArguments(
            options,
            payload: payload,
            after: after,
            expectBytes: expectBytes,
            checkPattern: checkPattern,
            reset: reset,
            timeout: timeout
        )
        // The options go on stdin: a large text payload would not fit in argv.
        let process = Subprocess(executable: python, arguments: [directory + "/transfer.py"])
        try process.start()
        try process.write(arguments + "\n")
        process.closeStdin()
        return RunningTransfer(process: process, timeout: timeout + 10)
    }

    /// Connects and trickles a TLS ClientHello (`tls`) or text, `step` bytes every `intervalMs`, until the server
    /// closes or `timeout` passes.
    public func trickle(
        host: String = "127.0.0.1",
        port: Int,
        tls: Bool = true,
        step: Int = 1,
        intervalMs: Int = 100,
        timeout: TimeInterval = 10
    ) throws -> TrickleResult {
        let arguments = try Self.encode([
            "host": host, "port": port, "tls": tls, "step": step, "interval_ms": intervalMs, "timeout": timeout,
        ])
        let result = try Subprocess.run(python, [directory + "/trickle.py", arguments], timeout: timeout + 10)
        guard result.exitCode == 0, let line = result.stdoutLines.last else {
            throw SubprocessError("trickle.py failed (\(result.status)):\n\(result.stderr)\(result.stdout)")
        }
        return try Self.decode(TrickleResult.self, line, from: "trickle.py")
    }

    /// Starts an interactive driver that holds connections.
    public func driver() throws -> ClientDriver {
        try ClientDriver(python: python, script: directory + "/driver.py")
    }
}

/// A `transfer` running in the background.
public final class RunningTransfer: @unchecked Sendable {
    /// The python process.
    public let process: Subprocess
    private let timeout: TimeInterval

    init(process: Subprocess, timeout: TimeInterval) {
        self.process = process
        self.timeout = timeout
    }

    /// Waits for the script's answer.
    public func result() throws -> TransferResult {
        let status: ExitStatus
        do {
            status = try process.waitForExit(timeout: timeout)
        } catch {
            process.terminate(grace: 1)
            throw error
        }
        guard status == .exited(0), let line = process.stdoutLines.last else {
            throw SubprocessError("transfer.py failed (\(status)):\n\(process.outputTail())")
        }
        return try PythonClient.decode(TransferResult.self, line, from: "transfer.py")
    }

    /// Kills the client.
    public func cancel() { process.terminate(grace: 1) }
}

/// One answer of the interactive driver.
public struct DriverReply: Decodable, Sendable, CustomStringConvertible {
    public var seq: Int?
    public var op: String?
    public var id: String?
    /// The command did what it should (open: connected and handshaken; echo: same bytes back; wait_closed: closed).
    public var ok: Bool
    /// `timeout`, `refused`, `reset`, `eof`, or `error: …`.
    public var error: String?
    public var version: String?
    public var cipher: String?
    public var alpn: String?
    public var handshakeMs: Double?
    public var elapsedMs: Double?
    public var localPort: Int?
    /// Text received (recv, echo).
    public var data: String?
    public var bytes: Int?
    /// The read side ended.
    public var eof: Bool?
    /// `fin`, `reset`, `eof`, `timeout` …
    public var how: String?
    /// wait_closed: the server closed.
    public var closed: Bool?
    /// wait_closed: time until the close.
    public var afterMs: Double?

    public var description: String {
        "DriverReply(op: \(op ?? "-"), id: \(id ?? "-"), ok: \(ok), error: \(error ?? "-"), how: \(how ?? "-"), "
            + "data: \(data.map { String($0.prefix(80)) } ?? "-"), version: \(version ?? "-"), "
            + "after: \(afterMs ?? -1) ms)"
    }
}

/// The interactive Python client: holds plain/TLS connections by id and runs commands on them one at a time.
public final class ClientDriver: @unchecked Sendable {
    /// The python process.
    public let process: Subprocess
    private let lock = NSLock()
    private var sequence = 0

    init(python: String, script: String) throws {
        process = Subprocess(executable: python, arguments: ["-u", script])
        try process.start()
        try process.waitForLine(in: .stdout, timeout: 10, "the driver's hello") { $0.contains("\"hello\"") }
    }

    deinit { process.terminate(grace: 1) }

    /// Sends one command and waits for its answer (`timeout` + 10 s at most).
    public func call(_ command: [String: Any], timeout: TimeInterval) throws -> DriverReply {
        let seq = lock.withLock { () -> Int in
            sequence += 1
            return sequence
        }
        var command = command
        command["seq"] = seq
        command["timeout"] = timeout
        try process.write(PythonClient.encode(command) + "\n")
        let marker = "\"seq\": \(seq),"
        let line = try process.waitForLine(in: .stdout, timeout: timeout + 10, "the driver's answer to \(command)") {
            $0.contains(marker)
        }
        return try PythonClient.decode(DriverReply.self, line, from: "driver.py")
    }

    /// Opens connection `id` (and completes the TLS handshake when `options.tls`).
    @discardableResult
    public func open(_ id: String, _ options: ClientOptions, timeout: TimeInterval = 5) throws -> DriverReply {
        var command = options.json
        command["op"] = "open"
        command["id"] = id
        return try call(command, timeout: timeout)
    }

    /// Sends `text` on `id`.
    @discardableResult
    public func send(_ id: String, _ text: String) throws -> DriverReply {
        try call(["op": "send", "id": id, "data": text], timeout: 5)
    }

    /// Reads `count` bytes from `id` (nil: until EOF).
    public func receive(_ id: String, count: Int?, timeout: TimeInterval = 5) throws -> DriverReply {
        var command: [String: Any] = ["op": "recv", "id": id]
        if let count { command["n"] = count }
        return try call(command, timeout: timeout)
    }

    /// Sends `text` on `id` and reads as many bytes back; `ok` when they are the same.
    public func echo(_ id: String, _ text: String, timeout: TimeInterval = 5) throws -> DriverReply {
        try call(["op": "echo", "id": id, "data": text], timeout: timeout)
    }

    /// Reads from `id` until the server closes it or `timeout` passes; `closed` tells which.
    public func waitClosed(_ id: String, timeout: TimeInterval = 5) throws -> DriverReply {
        try call(["op": "wait_closed", "id": id], timeout: timeout)
    }

    /// Sends a FIN on plain connection `id`.
    @discardableResult
    public func shutdownWrite(_ id: String) throws -> DriverReply {
        try call(["op": "shutdown_write", "id": id], timeout: 5)
    }

    /// Closes `id` (with RST when `reset`).
    @discardableResult
    public func close(_ id: String, reset: Bool = false) throws -> DriverReply {
        try call(["op": "close", "id": id, "reset": reset], timeout: 5)
    }

    /// Closes every connection and ends the driver.
    public func quit() {
        try? process.write(#"{"op": "quit"}"# + "\n")
        process.closeStdin()
        if (try? process.waitForExit(timeout: 5)) == nil { process.terminate(grace: 1) }
    }
}
