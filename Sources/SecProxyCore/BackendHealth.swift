import Synchronization

/// The up/down state of one pool's backends (SPEC §2 `[listener.health_check]`, §3 "Balancing").
///
/// Shared by every event loop: the balancer reads `isUp(_:)` on each new connection, so the flag is an
/// atomic; the consecutive success/failure counts behind it change only when a result is recorded, and
/// sit behind a per-backend mutex. Every backend starts up.
public final class BackendHealth: Sendable {
    /// One backend's state.
    private final class Backend: Sendable {
        /// Mirrors `machine.isUp`, readable without the lock.
        let up = Atomic<Bool>(true)
        let machine: Mutex<HealthStateMachine>

        init(fall: Int, rise: Int) {
            self.machine = Mutex(HealthStateMachine(fall: fall, rise: rise))
        }
    }

    private let backends: [Backend]
    private let onChange: @Sendable (_ index: Int, _ isUp: Bool) -> Void

    /// - Parameters:
    ///   - count: number of backends in the pool, in pool order.
    ///   - fall: consecutive failures that mark an up backend down (at least 1).
    ///   - rise: consecutive successes that mark a down backend up again (at least 1).
    ///   - onChange: called once per transition with the backend's index and its new state (logs, the
    ///     `secproxy_backend_up` gauge). Called while that backend's state is locked, so that transitions of
    ///     one backend are reported in the order they happened; it must not call `record` itself.
    public init(
        count: Int, fall: Int, rise: Int,
        onChange: @escaping @Sendable (_ index: Int, _ isUp: Bool) -> Void = { _, _ in }
    ) {
        precondition(count >= 0 && fall >= 1 && rise >= 1)
        self.backends = (0..<count).map { _ in Backend(fall: fall, rise: rise) }
        self.onChange = onChange
    }

    /// Number of backends tracked.
    public var count: Int { backends.count }

    /// Whether backend `index` may be chosen for new connections.
    public func isUp(_ index: Int) -> Bool {
        backends[index].up.load(ordering: .relaxed)
    }

    /// Indices of the backends that are up, in pool order.
    public var upIndices: [Int] {
        backends.indices.filter { backends[$0].up.load(ordering: .relaxed) }
    }

    /// Records the outcome of one check of backend `index` (a health check, or a connect made for a client).
    ///
    /// - Parameters:
    ///   - index: the backend, in pool order.
    ///   - success: whether the connect succeeded.
    /// - Returns: the backend's new state when this result changed it, else `nil`.
    @discardableResult
    public func record(index: Int, success: Bool) -> Bool? {
        let backend = backends[index]
        return backend.machine.withLock { machine in
            guard let changed = machine.record(success: success) else { return nil }
            backend.up.store(changed, ordering: .relaxed)
            onChange(index, changed)
            return changed
        }
    }
}

/// One backend's `fall`/`rise` hysteresis: `fall` consecutive failures take an up backend down, `rise`
/// consecutive successes bring a down backend back. A result of the other kind resets the run being counted.
struct HealthStateMachine: Sendable, Equatable {
    /// Consecutive failures that mark an up backend down.
    let fall: Int
    /// Consecutive successes that mark a down backend up.
    let rise: Int
    /// The current state; a backend starts up.
    private(set) var isUp = true
    /// Failures in a row since the last success (or the last transition).
    private(set) var consecutiveFailures = 0
    /// Successes in a row since the last failure (or the last transition).
    private(set) var consecutiveSuccesses = 0

    init(fall: Int, rise: Int) {
        precondition(fall >= 1 && rise >= 1)
        self.fall = fall
        self.rise = rise
    }

    /// Counts one check result.
    /// - Returns: the new state when it changed, else `nil`.
    mutating func record(success: Bool) -> Bool? {
        if success {
            consecutiveFailures = 0
            consecutiveSuccesses += 1
        } else {
            consecutiveSuccesses = 0
            consecutiveFailures += 1
        }
        switch (isUp, success) {
        case (true, false) where consecutiveFailures >= fall:
            isUp = false
        case (false, true) where consecutiveSuccesses >= rise:
            isUp = true
        default:
            return nil
        }
        consecutiveFailures = 0
        consecutiveSuccesses = 0
        return isUp
    }
}
