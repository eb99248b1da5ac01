import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure of a helper process or of a file operation, with a message a test can print.
public struct SubprocessError: Error, CustomStringConvertible, LocalizedError {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
    public var errorDescription: String? { message }
}

/// How a child process ended.
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    /// Exited with this code.
    case exited(Int32)
    /// Killed by this signal.
    case signaled(Int32)

    /// The exit code, or nil when killed by a signal.
    public var code: Int32? {
        if case .exited(let code) = self { return code }
        return nil
    }

    public var description: String {
        switch self {
        case .exited(let code): return "exit code \(code)"
        case .signaled(let signal): return "killed by signal \(signal)"
        }
    }
}

/// Which output stream of a child process.
public enum OutputStream: Sendable {
    case stdout
    case stderr
}

/// A child process whose stdout and stderr are captured line by line (thread-safe), with waits that
/// poll to a deadline and fail with the output seen so far.
public final class Subprocess: @unchecked Sendable {
    /// The program run.
    public let executable: String
    /// Its arguments (without argv[0]).
    public let arguments: [String]

    /// What `posix_spawn` gets. Foundation's `Process.run()` is not used: on Linux (Swift 6.3.1) it
    /// crashes intermittently while listing /proc/self/fd (swift-corelibs-foundation PR #5472).
    private let environment: [String]
    private let currentDirectory: String?
    private var processIdentifier: pid_t = 0
    private let stdinPipe = Pipe()
    private let stdoutPipe = Pipe()
    private let stderrPipe = Pipe()
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var outLines: [String] = []
    private var errLines: [String] = []
    private var outData = Data()
    private var errData = Data()
    private var openStreams = 2
    private var status: ExitStatus?
    private var stdinClosed = false

    /// Prepares (does not start) `executable arguments…`.
    /// - Parameters:
    ///   - environment: added to (or, with `inheritEnvironment: false`, replacing) this process's environment;
    ///     a nil value removes a variable.
    ///   - currentDirectory: the child's working directory.
    public init(
        executable: String,
        arguments: [String] = [],
        environment: [String: String?] = [:],
        inheritEnvironment: Bool = true,
        currentDirectory: String? = nil
    ) {
        self.executable = executable
        self.arguments = arguments
        var env = inheritEnvironment ? ProcessInfo.processInfo.environment : [:]
        for (key, value) in environment {
            env[key] = value
        }
        self.environment = env.map { "\($0.key)=\($0.value)" }
        self.currentDirectory = currentDirectory
        // Only the dup2'ed copies reach a child: no pipe of ours leaks into another child.
        for handle in [
            stdinPipe.fileHandleForReading, stdinPipe.fileHandleForWriting, stdoutPipe.fileHandleForReading,
            stdoutPipe.fileHandleForWriting, stderrPipe.fileHandleForReading, stderrPipe.fileHandleForWriting,
        ] {
            _ = fcntl(handle.fileDescriptor, F_SETFD, FD_CLOEXEC)
        }
    }

    /// Starts the process and the threads that collect its output.
    public func start() throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe.fileHandleForReading.fileDescriptor, 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe.fileHandleForWriting.fileDescriptor, 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe.fileHandleForWriting.fileDescriptor, 2)
        // Nothing else of this test process (sockets, pipes of other children) reaches the child:
        // a port a test frees must be free, and the child's descriptor counts must be its own.
        if let closeFrom = Self.addCloseFrom {
            _ = closeFrom(&actions, 3)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Signals this process ignores or blocks must not carry over to the child.
        var defaults = sigset_t()
        sigfillset(&defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var path = executable
        var words = [executable]
        if let currentDirectory {
            if let addChdir = Self.addChdir {
                _ = addChdir(&actions, currentDirectory)
            } else {
                path = "/bin/sh"
                words = ["/bin/sh", "-c", "cd \"$1\" || exit 127; shift; exec \"$@\"", "sh", currentDirectory, executable]
            }
        }
        let argv = (words + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw SubprocessError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        processIdentifier = pid
        let spawned = pid
        // The child has its copies; ours of its ends must go, or reads would never see EOF.
        try? stdinPipe.fileHandleForReading.close()
        try? stdoutPipe.fileHandleForWriting.close()
        try? stderrPipe.fileHandleForWriting.close()

        let waiter = Thread { [self] in
            var raw: Int32 = 0
            while waitpid(spawned, &raw, 0) < 0 && errno == EINTR {}
            // WIFEXITED / WEXITSTATUS / WTERMSIG (macros, not importable).
            let status: ExitStatus = raw & 0x7f == 0 ? .exited((raw >> 8) & 0xff) : .signaled(raw & 0x7f)
            condition.withLock {
                self.status = status
                condition.broadcast()
            }
        }
        waiter.start()
        startReader(stdoutPipe.fileHandleForReading.fileDescriptor, .stdout)
        startReader(stderrPipe.fileHandleForReading.fileDescriptor, .stderr)
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+) and `..._addchdir_np` (2.29+): declared
    /// in spawn.h but not imported into Swift, so looked up at run time.
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32
    private static let addCloseFrom: AddCloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map {
        unsafeBitCast($0, to: AddCloseFrom.self)
    }
    private static let addChdir: AddChdir? = dlsym(nil, "posix_spawn_file_actions_addchdir_np").map {
        unsafeBitCast($0, to: AddChdir.self)
    }

    /// The child's process id.
    public var pid: Int32 { processIdentifier }

    /// A short form of the command line, for messages.
    public var commandLine: String { ([executable] + arguments).joined(separator: " ") }

    private func startReader(_ fd: Int32, _ stream: OutputStream) {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                self.append(Data(buffer[0..<count]), to: stream)
            }
            self.finish(stream)
        }
        thread.name = "subprocess-\(stream)"
        thread.start()
    }

    private func append(_ data: Data, to stream: OutputStream) {
        condition.withLock {
            switch stream {
            case .stdout:
                outData.append(data)
                outLines.append(contentsOf: Self.takeLines(&outData))
            case .stderr:
                errData.append(data)
                errLines.append(contentsOf: Self.takeLines(&errData))
            }
            condition.broadcast()
        }
    }

    private func finish(_ stream: OutputStream) {
        condition.withLock {
            // A last line without a newline still counts.
            switch stream {
            case .stdout:
                if !outData.isEmpty { outLines.append(String(decoding: outData, as: UTF8.self)) }
                outData = Data()
            case .stderr:
                if !errData.isEmpty { errLines.append(String(decoding: errData, as: UTF8.self)) }
                errData = Data()
            }
            openStreams -= 1
            condition.broadcast()
        }
    }

    private static func takeLines(_ data: inout Data) -> [String] {
        var lines: [String] = []
        while let newline = data.firstIndex(of: UInt8(ascii: "\n")) {
            var line = data[data.startIndex..<newline]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            lines.append(String(decoding: line, as: UTF8.self))
            data.removeSubrange(data.startIndex...newline)
        }
        return lines
    }

    // MARK: - Output

    /// All complete stdout lines so far.
    public var stdoutLines: [String] { condition.withLock { outLines } }
    /// All complete stderr lines so far.
    public var stderrLines: [String] { condition.withLock { errLines } }
    /// Stdout so far, lines joined with newlines.
    public var stdout: String { stdoutLines.map { $0 + "\n" }.joined() }
    /// Stderr so far, lines joined with newlines.
    public var stderr: String { stderrLines.map { $0 + "\n" }.joined() }

    /// The lines of `stream` so far.
    public func lines(_ stream: OutputStream) -> [String] {
        stream == .stdout ? stdoutLines : stderrLines
    }

    /// The last `count` lines of both streams, for failure messages.
    public func outputTail(_ count: Int = 40) -> String {
        let (out, err) = condition.withLock { (outLines, errLines) }
        return "--- stdout of \(commandLine) (last \(count) lines) ---\n"
            + out.suffix(count).joined(separator: "\n")
            + "\n--- stderr (last \(count) lines) ---\n" + err.suffix(count).joined(separator: "\n")
    }

    /// Waits until a line of `stream` at index `startIndex` or later satisfies `predicate`, and returns it.
    ///
    /// Fails early when the process exits and its output ends without such a line.
    /// - Parameters:
    ///   - stream: which stream to watch.
    ///   - startIndex: skip lines before this index (to wait for a *new* line).
    ///   - timeout: seconds before failing with the output seen so far.
    ///   - description: what is awaited, for the failure message.
    @discardableResult
    public func waitForLine(
        in stream: OutputStream = .stderr,
        from startIndex: Int = 0,
        timeout: TimeInterval,
        _ description: String = "a matching line",
        matching predicate: (String) -> Bool
    ) throws -> String {
        let deadline = Deadline(seconds: timeout)
        var exitedWithoutIt = false
        let found: String? = condition.withLock {
            var checked = startIndex
            while true {
                let lines = stream == .stdout ? outLines : errLines
                while checked < lines.count {
                    if predicate(lines[checked]) { return lines[checked] }
                    checked += 1
                }
                if status != nil && openStreams == 0 {
                    exitedWithoutIt = true
                    return nil
                }
                if deadline.hasPassed { return nil }
                _ = condition.wait(until: deadline.date)
            }
        }
        if let found { return found }
        let why =
            exitedWithoutIt
            ? "the process ended (\(status.map { "\($0)" } ?? "?")) first" : "timed out after \(timeout)s"
        throw DeadlineExceeded("waiting for \(description) on \(stream) of \(commandLine): \(why)\n\(outputTail())")
    }

    /// Waits for a line of `stream` containing `substring`.
    @discardableResult
    public func waitForLine(
        containing substring: String,
        in stream: OutputStream = .stderr,
        from startIndex: Int = 0,
        timeout: TimeInterval
    ) throws -> String {
        try waitForLine(in: stream, from: startIndex, timeout: timeout, "a line containing '\(substring)'") {
            $0.contains(substring)
        }
    }

    // MARK: - Input

    /// Writes `text` to the child's stdin.
    public func write(_ text: String) throws {
        try write(Data(text.utf8))
    }

    /// Writes `data` to the child's stdin.
    public func write(_ data: Data) throws {
        do {
            try stdinPipe.fileHandleForWriting.write(contentsOf: data)
        } catch {
            throw SubprocessError("writing to stdin of \(commandLine): \(error)\n\(outputTail())")
        }
    }

    /// Closes the child's stdin (it sees end of file).
    public func closeStdin() {
        let close = condition.withLock { () -> Bool in
            defer { stdinClosed = true }
            return !stdinClosed
        }
        if close { try? stdinPipe.fileHandleForWriting.close() }
    }

    // MARK: - Lifetime

    /// How the process ended, or nil while it runs.
    public var exitStatus: ExitStatus? { condition.withLock { status } }

    /// True while the process runs.
    public var isRunning: Bool { exitStatus == nil }

    /// Waits until the process has ended and its output is fully read; returns how it ended.
    @discardableResult
    public func waitForExit(timeout: TimeInterval) throws -> ExitStatus {
        let deadline = Deadline(seconds: timeout)
        let result: ExitStatus? = condition.withLock {
            while status == nil || openStreams > 0 {
                // Output pipes can stay open when the child left a grandchild behind: then the exit alone counts.
                if deadline.hasPassed { break }
                _ = condition.wait(until: deadline.date)
            }
            return status
        }
        guard let result else {
            throw DeadlineExceeded("\(commandLine) (pid \(pid)) still running after \(timeout)s\n\(outputTail())")
        }
        return result
    }

    /// Waits for the end and returns the exit code; fails when killed by a signal.
    public func waitForExitCode(timeout: TimeInterval) throws -> Int32 {
        let status = try waitForExit(timeout: timeout)
        guard let code = status.code else {
            throw SubprocessError("\(commandLine) \(status)\n\(outputTail())")
        }
        return code
    }

    /// Sends `signal` to the process (by its PID) if it still runs.
    public func send(signal: Int32) {
        guard isRunning, pid > 0 else { return }
        kill(pid, signal)
    }

    /// Ends the process: SIGTERM, then SIGKILL if it has not exited within `grace` seconds. Never throws.
    public func terminate(grace: TimeInterval = 5) {
        guard pid > 0 else { return }
        closeStdin()
        if isRunning {
            send(signal: SIGTERM)
            if (try? waitForExit(timeout: grace)) == nil {
                send(signal: SIGKILL)
                _ = try? waitForExit(timeout: 5)
            }
        }
    }

    // MARK: - One-shot runs

    /// The outcome of a process run to completion.
    public struct Result: Sendable {
        public var status: ExitStatus
        public var stdout: String
        public var stderr: String
        /// The exit code (-1 when killed by a signal).
        public var exitCode: Int32 { status.code ?? -1 }
        public var stdoutLines: [String] { Self.lines(stdout) }
        public var stderrLines: [String] { Self.lines(stderr) }
        static func lines(_ text: String) -> [String] {
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if lines.last == "" { lines.removeLast() }
            return lines
        }
    }

    /// Runs `executable arguments…` to completion with `input` on stdin; kills it after `timeout` seconds.
    public static func run(
        _ executable: String,
        _ arguments: [String] = [],
        input: Data? = nil,
        environment: [String: String?] = [:],
        inheritEnvironment: Bool = true,
        currentDirectory: String? = nil,
        timeout: TimeInterval = 30
    ) throws -> Result {
        let child = Subprocess(
            executable: executable,
            arguments: arguments,
            environment: environment,
            inheritEnvironment: inheritEnvironment,
            currentDirectory: currentDirectory
        )
        try child.start()
        if let input, !input.isEmpty { try? child.write(input) }
        child.closeStdin()
        let status: ExitStatus
        do {
            status = try child.waitForExit(timeout: timeout)
        } catch {
            child.terminate(grace: 1)
            throw error
        }
        return Result(status: status, stdout: child.stdout, stderr: child.stderr)
    }

    /// Finds `name` on PATH (or returns it when it contains a slash).
    public static func which(_ name: String) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
