import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SecProxyConfig
import SecProxyCore
import SecProxyTLS
import Synchronization

/// The running proxy: the configuration in force, the listeners bound from it, their health checkers and
/// the admin endpoint; start-up, reload and stop.
///
/// An actor, and reload and stop run one at a time (`exclusive`), across their awaits: a SIGTERM during a
/// reload waits for it, a second SIGHUP queues behind the first. A reload is one `Preparation.prepare`
/// (off the event loops, on the thread pool) followed by one commit of its result; an invalid result
/// changes nothing.
actor ProxyController {
    /// A bound listener and what it was bound with.
    private struct BoundListener {
        let listener: ProxyListener
        let listen: SocketAddressSpec
        let mode: ListenerMode
        let observer: ListenerObserver
    }

    /// After the drain timeout closed every connection, how long to wait for them to report their end.
    static let closeGrace: TimeAmount = .seconds(3)

    let path: String
    let logger: Logger
    let logSettings: LineLogHandler.Settings
    let group: EventLoopGroup
    let tracker: ConnectionTracker
    let metrics: ProxyMetrics
    let health: HealthState
    let notifier: SystemdNotifier
    private let logging: LoggingObserver
    private let adminLimits: AdminServer.Limits
    private let threadPool: NIOThreadPool
    /// Sockets passed by systemd, taken by the listener of the same name.
    private var activation: SocketActivation
    private(set) var current: PreparedConfiguration
    private var listeners: [String: BoundListener] = [:]
    /// Active health checkers by listener name.
    private var healthCheckers: [String: [HealthChecker]] = [:]
    private var admin: AdminServer?
    /// `watch_files`: the state of the files the configuration in force names, as last acted upon.
    private var watcher: FileWatcher?
    private var stopping = false
    /// `exclusive`: whether a reload or stop holds it, and who waits for it.
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(
        path: String, prepared: PreparedConfiguration, logger: Logger, logSettings: LineLogHandler.Settings,
        group: EventLoopGroup, metrics: ProxyMetrics, health: HealthState, notifier: SystemdNotifier,
        activation: SocketActivation, adminLimits: AdminServer.Limits = AdminServer.Limits(),
        threadPool: NIOThreadPool = .singleton
    ) {
        self.path = path
        self.current = prepared
        self.logger = logger
        self.logSettings = logSettings
        self.group = group
        self.metrics = metrics
        self.health = health
        self.notifier = notifier
        self.activation = activation
        self.adminLimits = adminLimits
        self.threadPool = threadPool
        self.logging = LoggingObserver(logger: logger)
        self.tracker = ConnectionTracker(maxConnections: prepared.configuration.server.maxConnections) {
            [logger] shortened, handshaking in
            if shortened {
                logger.warning(
                    "many connections in TLS handshake; shortening the handshake deadline for new ones",
                    metadata: ["handshaking": "\(handshaking)", "factor": "1/4"]
                )
            } else {
                logger.notice("handshake deadline back to normal", metadata: ["handshaking": "\(handshaking)"])
            }
        }
    }

    // MARK: - Start

    /// Binds the admin endpoint and every listener, then says `READY=1`. On a failure (logged at `critical`)
    /// nothing is announced and the caller exits with `runtimeFailure` after `closeAll()`.
    ///
    /// - Returns: the connection count sent with `READY=1`, or nil when start-up failed.
    func start() async -> Int? {
        metrics.configurationApplied(current)
        if let settings = current.configuration.admin {
            do {
                admin = try await startAdmin(settings)
            } catch {
                logger.critical(
                    "cannot bind admin endpoint", metadata: ["address": .string(settings.listen.text), "error": "\(error)"]
                )
                return nil
            }
        }
        for listener in current.configuration.listeners {
            guard await bindLogging(listener, prepared: current, level: .critical) == nil else { return nil }
        }
        for name in activation.closeRest() {
            logger.notice("passed socket not used by any listener; closed", metadata: ["name": .string(name)])
            notifier.removeListeningSocket(name: name)
        }
        startWatchingFiles()
        logger.info("ready", metadata: ["listeners": "\(listeners.count)"])
        health.started()
        let count = tracker.count
        notifier.notify("READY=1\nSTATUS=\(count) connections open")
        return count
    }

    /// After a failed start, or at the very end: closes the listeners and the admin endpoint.
    func closeAll() async {
        await closeListeners()
        await closeAdmin()
    }

    /// The bound address of listener `name`, if bound (tests, logs).
    func localAddress(of name: String) -> SocketAddress? {
        listeners[name]?.listener.localAddress
    }

    /// The admin endpoint's bound address, if any.
    var adminAddress: SocketAddress? { admin?.localAddress }

    /// Every server TLS context of the configuration in force (ticket-key rotation).
    var tlsContexts: [TLSServerContext] {
        current.configuration.listeners.compactMap { current.tlsContexts[$0.name] }
    }

    // MARK: - Listeners

    /// A new runtime for `listener`, reporting to `observer`; health checks are started separately
    /// (`startHealthChecks`), once the observer uses it.
    private func makeRuntime(
        _ listener: ListenerConfiguration, prepared: PreparedConfiguration, observer: ListenerObserver
    ) -> ListenerRuntime {
        let name = listener.name
        let reference = RuntimeReference()
        let runtime = ListenerRuntime(
            configuration: listener, tlsContext: prepared.tlsContexts[name],
            backendTLSContext: prepared.backendTLSContexts[name], metrics: metrics.listenerMetrics(for: listener)
        ) { [logger, metrics, weak observer] backend, isUp in
            logger.log(
                level: isUp ? .notice : .warning, isUp ? "backend up" : "backend down",
                metadata: ["listener": .string(name), "backend": .string(backend)]
            )
            // Only the listener's current runtime speaks for the gauge: an old one's pools (connections from
            // before a reload) no longer choose backends.
            guard let runtime = reference.runtime, let observer, observer.runtime === runtime else { return }
            metrics.setBackend(listener: name, backend: backend, up: runtime.isUp(backend: backend))
        }
        reference.runtime = runtime
        return runtime
    }

    private func startHealthChecks(_ name: String, runtime: ListenerRuntime) {
        stopHealthChecks(name)
        guard let settings = runtime.healthCheck else { return }
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

    private func stopHealthChecks(_ listener: String) {
        for checker in healthCheckers.removeValue(forKey: listener) ?? [] {
            checker.stop()
        }
    }

    /// Stops every health checker (the service group's shutdown; closing listeners does it too).
    func stopAllHealthChecks() {
        for name in healthCheckers.keys { stopHealthChecks(name) }
    }

    private func bind(_ listener: ListenerConfiguration, prepared: PreparedConfiguration) async throws {
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
        let observer = ListenerObserver(logging: logging, health: health)
        let runtime = makeRuntime(listener, prepared: prepared, observer: observer)
        observer.use(runtime)
        let bound: ProxyListener
        do {
            bound = try await ProxyListener.start(
                descriptor: descriptor, runtime: runtime, group: group, tracker: tracker, observer: observer
            ).get()
        } catch {
            close(descriptor)
            throw error
        }
        metrics.resetBackends(listener: listener.name, backends: runtime.backendTexts)
        startHealthChecks(listener.name, runtime: runtime)
        listeners[listener.name] = BoundListener(listener: bound, listen: spec, mode: listener.mode, observer: observer)
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

    /// `bind`, logging a failure at `level`; nil when the listener is bound, else why not.
    private func bindLogging(
        _ listener: ListenerConfiguration, prepared: PreparedConfiguration, level: Logger.Level
    ) async -> String? {
        do {
            try await bind(listener, prepared: prepared)
            return nil
        } catch {
            logger.log(
                level: level, "cannot bind listener",
                metadata: [
                    "listener": .string(listener.name), "address": .string(listener.listen.value.text),
                    "error": "\(error)",
                ]
            )
            return "\(error)"
        }
    }

    private func closeListener(_ name: String) async {
        guard let bound = listeners.removeValue(forKey: name) else { return }
        stopHealthChecks(name)
        try? await bound.listener.close().get()
        metrics.removeBackends(listener: name)
    }

    private func closeListeners() async {
        for name in listeners.keys.sorted() {
            await closeListener(name)
        }
    }

    // MARK: - Admin

    private func startAdmin(_ settings: AdminSettings) async throws -> AdminServer {
        let server = try await AdminServer.start(
            listen: settings.listen, endpoint: AdminEndpoint(metrics: metrics, health: health), group: group,
            threadPool: threadPool, limits: adminLimits
        )
        logger.info(
            "admin listening",
            metadata: ["address": .string(server.localAddress?.logDescription ?? settings.listen.text)]
        )
        return server
    }

    /// Moves, opens or closes the admin endpoint for `settings`; false when the new address cannot be bound
    /// (the old endpoint then stays).
    private func applyAdmin(_ settings: AdminSettings?) async -> Bool {
        guard let settings else {
            if admin != nil {
                await closeAdmin()
                logger.info("admin endpoint closed")
            }
            return true
        }
        if let admin, Self.sameAddress(admin.listen, settings.listen) { return true }
        do {
            let moved = try await startAdmin(settings)
            await admin?.close()
            admin = moved
            return true
        } catch {
            logger.error(
                "cannot bind admin endpoint; keeping the old one",
                metadata: ["address": .string(settings.listen.text), "error": "\(error)"]
            )
            return false
        }
    }

    private static func sameAddress(_ a: SocketAddressSpec, _ b: SocketAddressSpec) -> Bool {
        func host(_ spec: SocketAddressSpec) -> String { spec.host == "localhost" ? "127.0.0.1" : spec.host }
        return host(a) == host(b) && a.port == b.port
    }

    func closeAdmin() async {
        await admin?.close()
        admin = nil
    }

    // MARK: - Reload

    /// Runs `body` when no other reload or stop is running.
    private func exclusive(_ body: () async -> Void) async {
        while busy {
            await withCheckedContinuation { waiters.append($0) }
        }
        busy = true
        await body()
        busy = false
        if !waiters.isEmpty { waiters.removeFirst().resume() }
    }

    /// SIGHUP: re-reads the configuration and every file it names; an invalid one keeps the running one.
    func reload() async {
        await exclusive { await reloadExclusively() }
    }

    /// `watch_files`: reloads when the configuration or a file it names changed since last acted upon.
    func reloadIfFilesChanged() async {
        await exclusive {
            guard !stopping, var watcher,
                let file = watcher.changedFile(path: path, configuration: current.configuration)
            else { return }
            self.watcher = watcher
            logger.info("file changed; reloading", metadata: ["file": .string(file)])
            await reloadExclusively()
        }
    }

    private func reloadExclusively() async {
        guard !stopping else { return }
        logger.info("reloading configuration")
        notifier.notify("RELOADING=1\nMONOTONIC_USEC=\(SystemdNotifier.monotonicMicroseconds())")
        let result = await prepare()
        if let prepared = result.prepared {
            for diagnostic in result.diagnostics {
                logger.warning("\(diagnostic)")
            }
            let complete = await commit(prepared)
            metrics.reloaded(success: complete)
            logger.info("configuration reloaded", metadata: ["listeners": "\(listeners.count)"])
        } else {
            for diagnostic in result.diagnostics {
                logger.error("\(diagnostic)")
            }
            metrics.reloaded(success: false)
            logger.error("configuration reload failed; keeping the running configuration")
        }
        notifier.notify("READY=1\nSTATUS=\(tracker.count) connections open")
    }

    /// `Preparation.prepare` on the thread pool: it reads files and builds TLS contexts, which may take
    /// seconds (a large CRL), and must starve neither an event loop nor the watchdog's task. Not cancelled
    /// with the caller: a reload that started finishes.
    private func prepare() async -> PreparationResult {
        let path = self.path
        let threadPool = self.threadPool
        // The running configuration goes in so that unchanged random ticket keys survive the reload.
        let previous = self.current
        let work = Task { try await threadPool.runIfActive { Preparation.prepare(path: path, previous: previous) } }
        do {
            return try await work.value
        } catch {
            return PreparationResult(
                prepared: nil, diagnostics: [.error("cannot prepare the configuration: \(error)", at: nil, file: path)]
            )
        }
    }

    /// Makes `prepared` the configuration in force: unchanged listeners keep their sockets and get a new
    /// runtime (new connections use it, open ones keep theirs), moved or dropped ones close, new ones bind.
    ///
    /// - Returns: whether everything it asks for is in force (every listener bound, the admin endpoint where
    ///   it says); a listener that cannot be bound is logged and reported by `/healthz`.
    private func commit(_ prepared: PreparedConfiguration) async -> Bool {
        let wanted = Dictionary(uniqueKeysWithValues: prepared.configuration.listeners.map { ($0.name, $0) })
        for (name, bound) in listeners.sorted(by: { $0.key < $1.key }) where wanted[name]?.listen.value != bound.listen {
            await closeListener(name)
            notifier.removeListeningSocket(name: name)
            logger.info("listener closed", metadata: ["listener": .string(name)])
        }
        var unbound: [String: String] = [:]
        for listener in prepared.configuration.listeners {
            if let bound = listeners[listener.name] {
                let runtime = makeRuntime(listener, prepared: prepared, observer: bound.observer)
                bound.observer.use(runtime)
                bound.listener.replaceRuntime(runtime)
                metrics.resetBackends(listener: listener.name, backends: runtime.backendTexts)
                startHealthChecks(listener.name, runtime: runtime)
                listeners[listener.name] = BoundListener(
                    listener: bound.listener, listen: bound.listen, mode: listener.mode, observer: bound.observer
                )
            } else if let error = await bindLogging(listener, prepared: prepared, level: .error) {
                unbound[listener.name] = error
            }
        }
        let server = prepared.configuration.server
        tracker.setMaxConnections(server.maxConnections)
        logSettings.update(format: server.logFormat, level: Logger.Level(server.logLevel))
        current = prepared
        let adminInPlace = await applyAdmin(prepared.configuration.admin)
        health.setUnbound(unbound)
        metrics.configurationApplied(prepared)
        // The files of the new configuration, as they are now, are the state the watcher acts upon.
        startWatchingFiles()
        return unbound.isEmpty && adminInPlace
    }

    private func startWatchingFiles() {
        watcher = current.configuration.server.watchFiles ? FileWatcher(path: path, configuration: current.configuration) : nil
    }

    // MARK: - Stop

    /// SIGTERM: closes the listening sockets (new connections are refused), `/healthz` says draining, open
    /// connections get `drain_timeout` to finish, then the rest are closed (reason `shutdown`).
    func stop() async {
        var first = false
        await exclusive {
            first = !stopping
            stopping = true
        }
        guard first else { return }
        let drain = TimeAmount(current.configuration.server.drainTimeout)
        logger.info("stopping", metadata: ["open_connections": "\(tracker.count)"])
        notifier.notify("STOPPING=1")
        health.draining()
        stopAllHealthChecks()
        await closeListeners()
        let loop = group.next()
        let drained = tracker.waitUntilEmpty(on: loop)
        guard await !Self.completes(drained, within: drain, on: loop) else { return }
        logger.info("drain timeout reached; closing open connections", metadata: ["open_connections": "\(tracker.count)"])
        tracker.closeAll()
        // Closing is immediate; should a connection still not report its end, stop anyway.
        guard await !Self.completes(drained, within: Self.closeGrace, on: loop) else { return }
        logger.warning("connections did not close in time; exiting", metadata: ["open_connections": "\(tracker.count)"])
    }

    /// Whether `future` completes within `timeout` (it is not waited for beyond).
    private static func completes(_ future: EventLoopFuture<Void>, within timeout: TimeAmount, on loop: EventLoop) async -> Bool {
        let outcome = loop.makePromise(of: Bool.self)
        loop.execute {
            // Both callbacks run on `loop`: the first one decides.
            let decided = NIOLoopBoundBox(false, eventLoop: loop)
            let timer = loop.scheduleTask(in: timeout) {
                guard !decided.value else { return }
                decided.value = true
                outcome.succeed(false)
            }
            future.whenComplete { _ in
                timer.cancel()
                guard !decided.value else { return }
                decided.value = true
                outcome.succeed(true)
            }
        }
        return (try? await outcome.futureResult.get()) ?? true
    }
}

/// The runtime a health callback belongs to, set once the runtime exists; weak, since the runtime holds
/// the callback.
private final class RuntimeReference: Sendable {
    private struct Weak {
        weak var runtime: ListenerRuntime?
    }

    private let box = Mutex(Weak())

    var runtime: ListenerRuntime? {
        get { box.withLock { $0.runtime } }
        set { box.withLock { $0.runtime = newValue } }
    }
}

extension ListenerRuntime {
    /// Every backend of the listener and its routes, once each, as written in the config.
    var backendTexts: [String] {
        var seen: Set<String> = []
        return allPools.flatMap(\.backends).map(\.text).filter { seen.insert($0).inserted }
    }

    /// Whether `backend` is up in every pool that has it (a backend listed by the listener and by a route
    /// has a state in each).
    func isUp(backend: String) -> Bool {
        allPools.allSatisfy { pool in
            pool.backends.indices.allSatisfy { index in
                pool.backends[index].text != backend || (pool.health?.isUp(index) ?? true)
            }
        }
    }
}
