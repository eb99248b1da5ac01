import Synchronization

/// One rotation over a listener's backends, shared by every event loop (SPEC §3 "Balancing").
public final class RoundRobinBalancer: Sendable {
    private let next = Atomic<Int>(0)

    public init() {}

    /// The index to try first for a new connection among `count` backends.
    public func start(count: Int) -> Int {
        precondition(count > 0)
        let ticket = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return Int(UInt(bitPattern: ticket) % UInt(count))
    }
}
