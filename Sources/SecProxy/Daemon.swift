import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import SecProxyConfig
import SecProxyCore

/// The running daemon: binds the listeners of a prepared configuration, reloads on SIGHUP,
/// drains and exits on SIGTERM/SIGINT.
public final class Daemon: @unchecked Sendable {
    /// Exit codes (SPEC §1).
    public enum ExitCode {
        public static let success: Int32 = 0
        public static let invalidConfiguration: Int32 = 1
        public static let runtimeFailure: Int32 = 3
    }

    private struct BoundListener {
        let listener: ProxyListener
        let listen: SocketAddressSpec
        let mode: ListenerMode
    }

    private let path: String
    private let logger: Logger
    private let logSettings: LineLogHandler.Settings
    private let group: MultiThreadedEventLoopGroup
    private let tracker: ConnectionTracker
    private let observer: LoggingObserver
    /// Serializes signals, reload and stop; everything below is touched only on it.
    private let control = DispatchQueue(label: "secproxy.control")
    private var listeners: [String: BoundListener] = [:]
    private var current: PreparedConfiguration
    private var stopping = false
    private var signalSources: [DispatchSourceSignal] = []
    private let exit = DispatchSemaphore(value: 0)
    private var exitCode: Int32 = ExitCode.success
    private let notifier = SystemdNotifier()
    /// Sockets passed by systemd, taken by the listener of the same name.
    private var activation = SocketActivation()
    private var watcher: FileWatcher?
    private var watchTimer: DispatchSourceTimer?
    /// Active health checkers by listener name.
    private var healthCheckers: [String: [HealthChecker]] = [:]
    private var timers: [DispatchSourceTimer] = []
    private var lastStatusCount = -1

    private init(path: String, prepared: PreparedConfiguration, logger: Logger, logSettings: LineLogHandler.Settings) {
        self.path = path
        self.current = prepared
        self.logger = logger
        self.logSettings = logSettings
        let server = prepared.configuration.server
        self.group = MultiThreadedEventLoopGroup(
            numberOfThreads: server.workers == 0 ? System.coreCount : server.workers
        )
        self.tracker = ConnectionTracker(maxConnections: server.maxConnections) { [logger] shortened, handshaking in
            if shortened {
                logger.warning(
                    "many connections in TLS handshake; shortening the handshake deadline for new ones",
                    metadata: ["handshaking": "\(handshaking)", "factor": "1/4"]
                )
            } else {
                logger.notice("handshake deadline back to normal", metadata: ["handshaking": "\(handshaking)"])
            }
        }
        self.observer = LoggingObserver(logger: logger)
    }

    /// Runs the daemon on the configuration at `path` until stopped; returns the process exit code.
    public static func run(configPath path: String) -> Int32 {
        let result = Preparation.prepare(path: path)
        for diagnostic in result.diagnostics {
            FileHandle.standardError.write(Data("\(diagnostic)\n".utf8))
        }
        guard let prepared = result.prepared else {
            // SPEC §1: a key that cannot be read at startup is a runtime failure; anything else is the config's.
            return result.failure == .cannotReadKey ? ExitCode.runtimeFailure : ExitCode.invalidConfiguration
        }

        let server = prepared.configuration.server
        let settings = LineLogHandler.Settings(format: server.logFormat, level: Logger.Level(server.logLevel))
        LoggingSystem.bootstrap { _ in LineLogHandler(settings: settings) }
        let logger = Logger(label: "secproxy")

        let daemon = Daemon(path: path, prepared: prepared, logger: logger, logSettings: settings)
        return daemon.start()
    }

    private func start() -> Int32 {
        // Signals are taken before binding so that an early SIGTERM still drains cleanly.
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: control)
            source.setEventHandler { [weak self] in self?.handleSignal(signalNumber) }
            source.resume()
            signalSources.append(source)
        }
        let started: Bool = control.sync {
            for listener in current.configuration.listeners {
                guard bindLogging(listener, prepared: current, level: .critical) else { return false }
            }
            for name in activation.closeRest() {
                logger.notice("passed socket not used by any listener; closed", metadata: ["name": .string(name)])
                notifier.removeListeningSocket(name: name)
            }
            logger.info("ready", metadata: ["listeners": "\(listeners.count)"])
            lastStatusCount = tracker.count
            notifier.notify("READY=1\nSTATUS=\(lastStatusCount) connections open")
            startNotifyTimers()
            startWatchingFiles()
            return true
        }
        if !started {
            control.sync { closeListeners() }
            try? group.syncShutdownGracefully()
            return ExitCode.runtimeFailure
        }
        exit.wait()
        try? group.syncShutdownGracefully()
        logger.info("stopped")
        return exitCode
    }

    /// `STATUS=` at most once per second when the count changed, and `WATCHDOG=1` every half `WATCHDOG_USEC`.
    private func startNotifyTimers() {
        guard notifier.isEnabled else { return }
        let status = DispatchSource.makeTimerSource(queue: control)
        status.schedule(deadline: .now() + 1, repeating: 1)
        status.setEventHandler { [weak self] in
            guard let self, !self.stopping else { return }
            let count = self.tracker.count
            if count != self.lastStatusCount {
                self.lastStatusCount = count
                self.notifier.notify("STATUS=\(count) connections open")
            }
        }
        status.resume()
        timers.append(status)
        if let interval = notifier.watchdogInterval {
            let (seconds, attoseconds) = interval.components
            let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
            let watchdog = DispatchSource.makeTimerSource(queue: control)
            watchdog.schedule(deadline: .now(), repeating: .nanoseconds(max(nanoseconds, 1_000_000)))
            watchdog.setEventHandler { [notifier] in notifier.notify("WATCHDOG=1") }
            watchdog.resume()
            timers.append(watchdog)
        }
    }

    /// `watch_files`: reloads, as on SIGHUP, when the config or a file it names changed. Runs only while
    /// the current configuration asks for it (a reload may turn it on or off).
    private func startWatchingFiles() {
        guard current.configuration.server.watchFiles else {
            watchTimer?.cancel()
            watchTimer = nil
            watcher = nil
            return
        }
        watcher = FileWatcher(path: path, configuration: current.configuration)
        guard watchTimer == nil else { return }
        let timer = DispatchSource.makeTimerSource(queue: control)
        timer.schedule(deadline: .now() + FileWatcher.interval, repeating: FileWatcher.interval)
        timer.setEventHandler { [weak self] in
            guard let self, !self.stopping else { return }
            guard let file = self.watcher?.changedFile(path: self.path, configuration: self.current.configuration)
            else { return }
            self.logger.info("file changed; reloading", metadata: ["file": .string(file)])
            self.reload()
        }
        timer.resume()
        watchTimer = timer
    }

    private func handleSignal(_ signalNumber: Int32) {
        switch signalNumber {
        case SIGHUP:
            reload()
        default:
            stop()
        }
    }

    // MARK: - Listeners

    /// A new runtime for `listener`, with its health checkers started (replacing the listener's old ones).
    private func runtime(for listener: ListenerConfiguration, prepared: PreparedConfiguration) -> ListenerRuntime {
        let name = listener.name
        let runtime = ListenerRuntime(
            configuration: listener, tlsContext: prepared.tlsContexts[name],
            backendTLSContext: prepared.backendTLSContexts[name]
        ) { [logger] backend, isUp in
            logger.log(
                level: isUp ? .notice : .warning, isUp ? "backend up" : "backend down",
                metadata: ["listener": .string(name), "backend": .string(backend)]
            )
        }
        stopHealthChecks(name)
        if let settings = runtime.healthCheck {
            healthCheckers[name] = runtime.allPools.compactMap { pool in
                guard let health = pool.health else { return nil }
                let checker = HealthChecker(
                    targets: pool.backends, health: health, interval: TimeAmount(settings.interval),
                    timeout: TimeAmount(settings.timeout), eventLoop: group.next()
                )
                checker.start()
                return checker
            }
        }
        return runtime
    }

    private func stopHealthChecks(_ listener: String) {
        for checker in healthCheckers.removeValue(forKey: listener) ?? [] {
            checker.stop()
        }
    }

    private func bind(_ listener: ListenerConfiguration, prepared: PreparedConfiguration) throws {
        let spec = listener.listen.value
        let descriptor: CInt
        let passed = activation.take(listener.name)
        if let passed {
            try ListeningSocket.adopt(passed)
            descriptor = passed
        } else {
            let host = spec.host == "localhost" ? "127.0.0.1" : spec.host
            descriptor = try ListeningSocket.make(address: SocketAddress(ipAddress: host, port: spec.port))
        }
        let bound: ProxyListener
        do {
            bound = try ProxyListener.start(
                descriptor: descriptor, runtime: runtime(for: listener, prepared: prepared), group: group,
                tracker: tracker, observer: observer
            ).wait()
        } catch {
            close(descriptor)
            throw error
        }
        listeners[listener.name] = BoundListener(listener: bound, listen: spec, mode: listener.mode)
        notifier.storeListeningSocket(descriptor, name: listener.name)
        logger.info(
            "listening",
            metadata: [
                "listener": .string(listener.name),
                "address": .string(bound.localAddress?.logDescription ?? spec.text),
                "mode": .string(listener.mode.rawValue),
                "socket": .string(passed == nil ? "bound" : "inherited"),
            ]
        )
    }

    /// `bind`, logging a failure at `level`; true when the listener is bound.
    @discardableResult
    private func bindLogging(_ listener: ListenerConfiguration, prepared: PreparedConfiguration, level: Logger.Level) -> Bool {
        do {
            try bind(listener, prepared: prepared)
            return true
        } catch {
            logger.log(
                level: level, "cannot bind listener",
                metadata: [
                    "listener": .string(listener.name), "address": .string(listener.listen.value.text),
                    "error": "\(error)",
                ]
            )
            return false
        }
    }

    private func closeListeners() {
        for (name, bound) in listeners {
            stopHealthChecks(name)
            try? bound.listener.close().wait()
        }
        listeners = [:]
    }

    // MARK: - Reload

    private func reload() {
        guard !stopping else { return }
        logger.info("reloading configuration")
        notifier.notify("RELOADING=1\nMONOTONIC_USEC=\(SystemdNotifier.monotonicMicroseconds())")
        defer { notifier.notify("READY=1\nSTATUS=\(tracker.count) connections open") }
        let result = Preparation.prepare(path: path)
        guard let prepared = result.prepared else {
            for diagnostic in result.diagnostics {
                logger.error("\(diagnostic)")
            }
            logger.error("configuration reload failed; keeping the running configuration")
            return
        }
        for diagnostic in result.diagnostics {
            logger.warning("\(diagnostic)")
        }
        let wanted = Dictionary(uniqueKeysWithValues: prepared.configuration.listeners.map { ($0.name, $0) })
        for (name, bound) in listeners where wanted[name]?.listen.value != bound.listen {
            stopHealthChecks(name)
            try? bound.listener.close().wait()
            listeners[name] = nil
            notifier.removeListeningSocket(name: name)
            logger.info("listener closed", metadata: ["listener": .string(name)])
        }
        for listener in prepared.configuration.listeners {
            if let bound = listeners[listener.name] {
                bound.listener.replaceRuntime(runtime(for: listener, prepared: prepared))
                listeners[listener.name] = BoundListener(
                    listener: bound.listener, listen: bound.listen, mode: listener.mode
                )
            } else {
                bindLogging(listener, prepared: prepared, level: .error)
            }
        }
        let server = prepared.configuration.server
        tracker.setMaxConnections(server.maxConnections)
        logSettings.update(format: server.logFormat, level: Logger.Level(server.logLevel))
        current = prepared
        // The files of the new configuration, as they are now, are the state the watcher acts upon.
        startWatchingFiles()
        logger.info("configuration reloaded", metadata: ["listeners": "\(listeners.count)"])
    }

    // MARK: - Stop

    /// After the drain timeout closed every connection, how long to wait for them to report their end.
    static let closeGrace: TimeAmount = .seconds(3)

    private func stop() {
        guard !stopping else { return }
        stopping = true
        let drain = TimeAmount(current.configuration.server.drainTimeout)
        logger.info("stopping", metadata: ["open_connections": "\(tracker.count)"])
        notifier.notify("STOPPING=1")
        closeListeners()
        let loop = group.next()
        let drained = tracker.waitUntilEmpty(on: loop)
        let timeout = loop.scheduleTask(in: drain) { [tracker, logger, exit] in
            logger.info("drain timeout reached; closing open connections", metadata: ["open_connections": "\(tracker.count)"])
            tracker.closeAll()
            // Closing is immediate; should a connection still not report its end, stop anyway.
            loop.scheduleTask(in: Self.closeGrace) {
                if tracker.count > 0 {
                    logger.warning("connections did not close in time; exiting", metadata: ["open_connections": "\(tracker.count)"])
                    exit.signal()
                }
            }
        }
        drained.whenComplete { [exit] _ in
            timeout.cancel()
            exit.signal()
        }
    }
}
