import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Counts open client connections for the whole process (`max_connections`) and lets a stop
/// wait for them to drain, then close the stragglers.
///
/// Touched once when a connection opens and once when it ends; never on the data path.
public final class ConnectionTracker: Sendable {
    private struct State {
        /// Client channels of the open connections.
        var open: [ObjectIdentifier: Channel] = [:]
        var drainWaiters: [EventLoopPromise<Void>] = []
    }

    private let state = NIOLockedValueBox(State())
    private let limit: NIOLockedValueBox<Int>
    private let handshaking = Atomic<Int>(0)
    private let underPressure = Atomic<Bool>(false)
    private let pressureObserver: (@Sendable (_ shortened: Bool, _ handshaking: Int) -> Void)?

    /// - Parameters:
    ///   - maxConnections: the process-wide limit.
    ///   - pressureObserver: told when the handshake deadline starts and stops being shortened.
    public init(
        maxConnections: Int, pressureObserver: (@Sendable (_ shortened: Bool, _ handshaking: Int) -> Void)? = nil
    ) {
        self.limit = NIOLockedValueBox(maxConnections)
        self.pressureObserver = pressureObserver
    }

    /// Changes the limit for new connections (reload).
    public func setMaxConnections(_ value: Int) {
        limit.withLockedValue { $0 = value }
    }

    /// Connections still in their TLS handshake above which new ones get a shortened deadline.
    public var handshakePressureThreshold: Int {
        max(1, limit.withLockedValue { $0 } / Self.pressureDivisor)
    }

    /// A quarter of `max_connections` (the adaptive rule of README "Protection against abusive clients").
    static let pressureDivisor = 4
    /// Under pressure, new handshakes get this fraction of `handshake_timeout`.
    static let pressureDeadlineDivisor: Int64 = 4

    /// A handshake starts; returns the deadline it gets: `timeout`, or a quarter of it once more than
    /// `handshakePressureThreshold` handshakes are in progress (until they fall to half the threshold).
    /// Never longer than `timeout`.
    func handshakeStarted(timeout: TimeAmount) -> TimeAmount {
        let count = handshaking.wrappingAdd(1, ordering: .relaxed).newValue
        if count > handshakePressureThreshold,
            underPressure.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged
        {
            pressureObserver?(true, count)
        }
        guard underPressure.load(ordering: .relaxed) else { return timeout }
        return .nanoseconds(timeout.nanoseconds / Self.pressureDeadlineDivisor)
    }

    /// A handshake finished or its connection closed.
    func handshakeEnded() {
        let count = handshaking.wrappingSubtract(1, ordering: .relaxed).newValue
        if count <= handshakePressureThreshold / 2, underPressure.load(ordering: .relaxed),
            underPressure.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged
        {
            pressureObserver?(false, count)
        }
    }

    /// Connections in their TLS handshake now.
    public var handshakesInProgress: Int {
        handshaking.load(ordering: .relaxed)
    }

    /// Number of connections open now.
    public var count: Int {
        state.withLockedValue { $0.open.count }
    }

    /// Registers the connection of `channel` (its client channel), unless the process is at `max_connections`.
    func admit(_ channel: Channel) -> Bool {
        let max = limit.withLockedValue { $0 }
        return state.withLockedValue { state in
            guard state.open.count < max else { return false }
            state.open[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    /// The connection registered for the client channel `id` ended.
    func remove(_ id: ObjectIdentifier) {
        let waiters: [EventLoopPromise<Void>] = state.withLockedValue { state in
            state.open.removeValue(forKey: id)
            guard state.open.isEmpty else { return [] }
            defer { state.drainWaiters.removeAll() }
            return state.drainWaiters
        }
        for waiter in waiters { waiter.succeed() }
    }

    /// Completes once no connection is open.
    public func waitUntilEmpty(on eventLoop: EventLoop) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        let empty = state.withLockedValue { state in
            if state.open.isEmpty { return true }
            state.drainWaiters.append(promise)
            return false
        }
        if empty { promise.succeed() }
        return promise.futureResult
    }

    /// Ends every open connection with reason `shutdown` (a `ConnectionShutdownEvent` on its client channel).
    public func closeAll() {
        let open = state.withLockedValue { Array($0.open.values) }
        for channel in open {
            channel.pipeline.fireUserInboundEventTriggered(ConnectionShutdownEvent())
        }
    }
}
