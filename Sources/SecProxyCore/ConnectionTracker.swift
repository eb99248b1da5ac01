import NIOConcurrencyHelpers
import NIOCore

/// Counts open client connections for the whole process (`max_connections`) and lets a stop
/// wait for them to drain, then close the stragglers.
///
/// Touched once when a connection opens and once when it ends; never on the data path.
public final class ConnectionTracker: Sendable {
    private struct State {
        var open: [ObjectIdentifier: ProxyConnectionHandle] = [:]
        var drainWaiters: [EventLoopPromise<Void>] = []
    }

    private let state = NIOLockedValueBox(State())
    private let limit: NIOLockedValueBox<Int>

    public init(maxConnections: Int) {
        self.limit = NIOLockedValueBox(maxConnections)
    }

    /// Changes the limit for new connections (reload).
    public func setMaxConnections(_ value: Int) {
        limit.withLockedValue { $0 = value }
    }

    /// Number of connections open now.
    public var count: Int {
        state.withLockedValue { $0.open.count }
    }

    /// Registers a new connection, unless the process is at `max_connections`.
    func admit(_ connection: ProxyConnectionHandle) -> Bool {
        let max = limit.withLockedValue { $0 }
        return state.withLockedValue { state in
            guard state.open.count < max else { return false }
            state.open[ObjectIdentifier(connection)] = connection
            return true
        }
    }

    func remove(_ connection: ProxyConnectionHandle) {
        let waiters: [EventLoopPromise<Void>] = state.withLockedValue { state in
            state.open.removeValue(forKey: ObjectIdentifier(connection))
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

    /// Closes every open connection with reason `shutdown`.
    public func closeAll() {
        let open = state.withLockedValue { Array($0.open.values) }
        for connection in open { connection.shutdown() }
    }
}

/// What the tracker needs from a connection; lets it hold connections of any event loop.
final class ProxyConnectionHandle: Sendable {
    private let eventLoop: EventLoop
    private let onShutdown: NIOLoopBound<() -> Void>

    init(eventLoop: EventLoop, onShutdown: @escaping () -> Void) {
        self.eventLoop = eventLoop
        self.onShutdown = NIOLoopBound(onShutdown, eventLoop: eventLoop)
    }

    func shutdown() {
        eventLoop.execute { self.onShutdown.value() }
    }
}
