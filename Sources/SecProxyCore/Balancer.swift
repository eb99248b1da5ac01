import SecProxyConfig
import Synchronization

/// Chooses the first backend to try for a new connection among a pool's backends (SPEC §3
/// "Balancing"); failover then walks on from there, each backend at most once.
///
/// Shared by every event loop: `round_robin` is one rotation for the whole process, and the
/// per-backend open-connection counts behind `least_connections` and `random_two` are atomics.
public final class Balancer: Sendable {
    /// Open connections of one backend.
    final class Load: Sendable {
        let open = Atomic<Int>(0)
    }

    private let strategy: BalanceStrategy
    private let rotation = Atomic<Int>(0)
    private let loads: [Load]

    /// - Parameters:
    ///   - strategy: `balance` of the listener.
    ///   - count: number of backends in the pool (at least one).
    public init(strategy: BalanceStrategy, count: Int) {
        precondition(count > 0)
        self.strategy = strategy
        self.loads = (0..<count).map { _ in Load() }
    }

    /// The index to try first, among all backends.
    func first() -> Int {
        first(among: Array(loads.indices))
    }

    /// The index to try first among `candidates` (the backends that are up; never empty).
    func first(among candidates: [Int]) -> Int {
        let count = candidates.count
        switch strategy {
        case .roundRobin:
            return candidates[nextInRotation(count)]
        case .leastConnections:
            // The fewest open connections; ties take turns through the rotation.
            var least = Int.max
            var tied: [Int] = []
            for index in candidates {
                let load = loads[index].open.load(ordering: .relaxed)
                if load < least {
                    least = load
                    tied = [index]
                } else if load == least {
                    tied.append(index)
                }
            }
            return tied.count == 1 ? tied[0] : tied[nextInRotation(tied.count)]
        case .randomTwo:
            guard count > 1 else { return candidates[0] }
            let pickA = Int.random(in: 0..<count)
            var pickB = Int.random(in: 0..<(count - 1))
            if pickB >= pickA { pickB += 1 }
            let a = candidates[pickA]
            let b = candidates[pickB]
            return loads[b].open.load(ordering: .relaxed) < loads[a].open.load(ordering: .relaxed) ? b : a
        }
    }

    /// A connection to backend `index` was established.
    func opened(_ index: Int) {
        loads[index].open.wrappingAdd(1, ordering: .relaxed)
    }

    /// That connection ended.
    func closed(_ index: Int) {
        loads[index].open.wrappingSubtract(1, ordering: .relaxed)
    }

    /// Open connections per backend, in pool order (tests, metrics).
    public var openConnections: [Int] {
        loads.map { $0.open.load(ordering: .relaxed) }
    }

    private func nextInRotation(_ count: Int) -> Int {
        let ticket = rotation.wrappingAdd(1, ordering: .relaxed).oldValue
        return Int(UInt(bitPattern: ticket) % UInt(count))
    }
}
