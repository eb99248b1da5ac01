import NIOCore
import NIOPosix
import Synchronization

/// Active TCP checks of one pool's backends (SPEC §2 `[listener.health_check]`).
///
/// Every `interval` a round connects to each backend at once — TCP, or a unix socket — and closes the
/// connection as soon as it is established; each connect that succeeds within `timeout` counts as a
/// success in `health`, anything else as a failure. A round that is still running when the next one is due
/// makes that one skip, so a slow backend never piles up connects. All checks run on `eventLoop`.
public final class HealthChecker: Sendable {
    private enum Phase {
        case idle
        case running(RepeatedTask)
        case stopped
    }

    private struct State {
        var phase: Phase = .idle
        /// The round in flight: completes when all its checks have.
        var round: EventLoopFuture<Void>?
        /// Check connections not closed yet, so that `stop()` can close them.
        var channels: [ObjectIdentifier: Channel] = [:]
    }

    /// The check was dropped because the checker stopped.
    private struct Stopped: Error {}

    private let targets: [BackendTarget]
    private let health: BackendHealth
    private let interval: TimeAmount
    private let timeout: TimeAmount
    private let eventLoop: EventLoop
    private let state = Mutex(State())

    /// - Parameters:
    ///   - targets: the pool's backends, in the order `health` indexes them.
    ///   - health: where results go.
    ///   - interval: time between the starts of two rounds.
    ///   - timeout: how long one connect may take before it counts as a failure.
    ///   - eventLoop: where the timer and the check connections run.
    public init(
        targets: [BackendTarget], health: BackendHealth, interval: TimeAmount, timeout: TimeAmount,
        eventLoop: EventLoop
    ) {
        precondition(targets.count == health.count, "one health state per target")
        precondition(interval > .zero)
        self.targets = targets
        self.health = health
        self.interval = interval
        self.timeout = timeout
        self.eventLoop = eventLoop
    }

    /// Starts checking: the first round right away, then one every `interval`. Does nothing when already
    /// started or stopped (a checker is not restarted; make a new one).
    public func start() {
        state.withLock { state in
            guard case .idle = state.phase else { return }
            let task = eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: interval) { [weak self] _ in
                self?.startRound()
            }
            state.phase = .running(task)
        }
    }

    /// Stops checking: cancels the timer and closes the checks in flight. No result is recorded after this
    /// returns.
    ///
    /// - Returns: a future that completes once the timer is cancelled and the checks in flight have ended.
    @discardableResult
    public func stop() -> EventLoopFuture<Void> {
        let (task, round, channels) = state.withLock { state -> (RepeatedTask?, EventLoopFuture<Void>?, [Channel]) in
            let task: RepeatedTask?
            switch state.phase {
            case .running(let running): task = running
            case .idle, .stopped: task = nil
            }
            state.phase = .stopped
            let channels = Array(state.channels.values)
            state.channels = [:]
            return (task, state.round, channels)
        }
        // Outside the lock: closing on the event loop runs close callbacks at once, and they take the lock.
        for channel in channels {
            channel.close(promise: nil)
        }
        var pending: [EventLoopFuture<Void>] = []
        if let task {
            let cancelled = eventLoop.makePromise(of: Void.self)
            task.cancel(promise: cancelled)
            pending.append(cancelled.futureResult)
        }
        if let round {
            pending.append(round)
        }
        return EventLoopFuture.andAllComplete(pending, on: eventLoop)
    }

    /// Runs on `eventLoop`, from the timer.
    private func startRound() {
        let promise = eventLoop.makePromise(of: Void.self)
        let begins = state.withLock { state -> Bool in
            guard case .running = state.phase, state.round == nil else { return false }
            state.round = promise.futureResult
            return true
        }
        guard begins else {
            promise.succeed()
            return
        }
        let checks = targets.indices.map { index in
            check(targets[index]).map { success in
                self.state.withLock { state in
                    // Holding the lock while recording: once `stop()` has returned, nothing is recorded.
                    guard case .running = state.phase else { return }
                    self.health.record(index: index, success: success)
                }
            }
        }
        EventLoopFuture.andAllComplete(checks, on: eventLoop).whenComplete { _ in
            self.state.withLock { $0.round = nil }
            promise.succeed()
        }
    }

    /// One connect to `target`; succeeds with whether it was established, never fails.
    private func check(_ target: BackendTarget) -> EventLoopFuture<Bool> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { [self] channel in
                // Runs before the connect starts, for every channel the connect tries (a name may resolve to
                // several addresses), so that `stop()` can close any of them.
                let registered = state.withLock { state -> Bool in
                    guard case .running = state.phase else { return false }
                    state.channels[ObjectIdentifier(channel)] = channel
                    return true
                }
                guard registered else { return channel.eventLoop.makeFailedFuture(Stopped()) }
                channel.closeFuture.whenComplete { _ in
                    _ = self.state.withLock { $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
                }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
        let connected: EventLoopFuture<Channel>
        switch target.endpoint {
        case .address(let address):
            connected = bootstrap.connect(to: address)
        case .hostPort(let host, let port):
            connected = bootstrap.connect(host: host, port: port)
        case .unix(let path):
            connected = bootstrap.connect(unixDomainSocketPath: path)
        }
        return connected.map { channel in
            // The connect is the check; nothing is sent.
            channel.close(promise: nil)
            return true
        }.recover { _ in
            false
        }
    }
}
