import Foundation
import Logging
import NIOCore
import NIOPosix
import SecProxyConfig
import SecProxyCore
import ServiceLifecycle
import UnixSignals

/// The running daemon: binds the listeners of a prepared configuration, then runs one `ServiceGroup` — signals,
/// systemd notifications and watchdog, the admin endpoint, ticket-key rotation, reload (SIGHUP and
/// `watch_files`), health checks and the listeners — until SIGTERM/SIGINT, which drains and exits 0.
public final class Daemon: Sendable {
    /// Exit codes (SPEC §1).
    public enum ExitCode {
        public static let success: Int32 = 0
        public static let invalidConfiguration: Int32 = 1
        public static let runtimeFailure: Int32 = 3
    }

    /// How the daemon meets its surroundings; the defaults are the real process's.
    public struct Options: Sendable {
        /// `NOTIFY_SOCKET`, `WATCHDOG_USEC`, `LISTEN_FDS`, `FDSTORE`, ...
        public var environment: [String: String] = ProcessInfo.processInfo.environment
        /// Trap SIGTERM/SIGINT/SIGHUP (off for a daemon run inside a test process).
        public var handlesSignals = true
        /// Bounds of the admin socket.
        public var adminLimits = AdminServer.Limits()
        /// How often random ticket keys are rotated.
        public var ticketKeyRotationInterval: Duration = TicketKeyRotationService.defaultInterval
        /// Told after each ticket-key rotation, with the number of contexts rotated.
        public var onTicketKeyRotation: @Sendable (_ contexts: Int) -> Void = { _ in }
        /// How often `watch_files` looks at the files.
        public var watchInterval: Duration = FileWatcher.interval

        public init() {}
    }

    private let logger: Logger
    private let options: Options
    private let group: MultiThreadedEventLoopGroup
    private let controller: ProxyController
    /// The registry `/metrics` renders, and the handles the listeners count into.
    public let metrics: ProxyMetrics
    /// What `/healthz` answers.
    public let health: HealthState
    private let reloadRequests: AsyncStream<Void>.Continuation
    private let reloads: AsyncStream<Void>
    private let stopRequests: AsyncStream<Void>.Continuation
    private let stops: AsyncStream<Void>

    /// Runs the daemon on the configuration at `path` until stopped; returns the process exit code.
    public static func run(configPath path: String) async -> Int32 {
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
        return await daemon.run()
    }

    /// A daemon for `prepared` (the result of `Preparation.prepare(path:)`); nothing runs until `run()`.
    ///
    /// - Parameters:
    ///   - path: the configuration file, re-read on reload.
    ///   - logSettings: the format and level a reload may change.
    ///   - metrics: where the metrics go (a new registry by default).
    public init(
        path: String, prepared: PreparedConfiguration, logger: Logger, logSettings: LineLogHandler.Settings,
        metrics: ProxyMetrics = ProxyMetrics(), options: Options = Options()
    ) {
        self.logger = logger
        self.options = options
        self.metrics = metrics
        let health = HealthState()
        self.health = health
        let server = prepared.configuration.server
        let group = MultiThreadedEventLoopGroup(numberOfThreads: server.workers == 0 ? System.coreCount : server.workers)
        self.group = group
        self.controller = ProxyController(
            path: path, prepared: prepared, logger: logger, logSettings: logSettings, group: group, metrics: metrics,
            health: health, notifier: SystemdNotifier(environment: options.environment),
            activation: SocketActivation(environment: options.environment), adminLimits: options.adminLimits
        )
        (reloads, reloadRequests) = AsyncStream.makeStream(of: Void.self)
        (stops, stopRequests) = AsyncStream.makeStream(of: Void.self)
    }

    /// Reloads as on SIGHUP (queued behind a reload under way).
    public func requestReload() {
        reloadRequests.yield()
    }

    /// Stops as on SIGTERM: drain, then `run()` returns.
    public func requestStop() {
        stopRequests.yield()
    }

    /// The bound address of listener `name`.
    public func localAddress(ofListener name: String) async -> SocketAddress? {
        await controller.localAddress(of: name)
    }

    /// The admin endpoint's bound address.
    public func adminAddress() async -> SocketAddress? {
        await controller.adminAddress
    }

    /// Binds everything, says `READY=1`, runs until stopped; returns the exit code.
    public func run() async -> Int32 {
        // Signals are taken before binding so that an early SIGTERM still drains cleanly.
        let signals = options.handlesSignals ? await Self.trapSignals() : nil
        // The runtime's timer machinery opens its descriptors on first use: have that happen now, not after
        // `ready` (a descriptor count taken then would see one appear later).
        try? await ContinuousClock().sleep(for: .milliseconds(1))
        guard let statusCount = await controller.start() else {
            await controller.closeAll()
            try? await group.shutdownGracefully()
            return ExitCode.runtimeFailure
        }
        let controller = self.controller
        // Shut down in reverse: health checks, rotation and reload stop; then the listeners drain (while
        // /healthz says draining and the watchdog goes on); then the admin endpoint, the notifications.
        let services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(
                service: ControlService(
                    signals: signals, stopRequests: stops, requestReload: { [self] in requestReload() },
                    requestStop: { [self] in requestStop() }
                ),
                successTerminationBehavior: .gracefullyShutdownGroup, serviceName: "signals"
            ),
            .init(
                service: SystemdNotifyService(
                    notifier: controller.notifier, tracker: controller.tracker, health: health,
                    initialCount: statusCount
                ),
                serviceName: "systemd-notify"
            ),
            .init(service: AdminService(controller: controller), serviceName: "admin"),
            .init(service: ProxyService(controller: controller), serviceName: "listeners"),
            .init(
                service: ReloadService(controller: controller, requests: reloads, watchInterval: options.watchInterval),
                serviceName: "reload"
            ),
            .init(
                service: TicketKeyRotationService(
                    controller: controller, interval: options.ticketKeyRotationInterval,
                    onRotate: options.onTicketKeyRotation
                ),
                serviceName: "ticket-key-rotation"
            ),
            .init(service: HealthCheckService(controller: controller), serviceName: "health-checks"),
        ]
        // The group's own lines are debug chatter about its services: kept out of the daemon's log.
        var lifecycleLogger = logger
        lifecycleLogger.logLevel = .error
        let serviceGroup = ServiceGroup(configuration: ServiceGroupConfiguration(services: services, logger: lifecycleLogger))
        var exitCode = ExitCode.success
        do {
            try await serviceGroup.run()
        } catch {
            logger.error("service failed; stopping", metadata: ["error": "\(error)"])
            exitCode = ExitCode.runtimeFailure
        }
        await controller.closeAll()
        try? await group.shutdownGracefully()
        logger.info("stopped")
        return exitCode
    }

    /// SIGTERM, SIGINT and SIGHUP, delivered to the returned sequence instead of their default actions.
    private static func trapSignals() async -> UnixSignalsSequence {
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] {
            signal(signalNumber, SIG_IGN)
        }
        return await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
    }
}
