import NIOCore
import Synchronization

/// What `GET /healthz` answers (SPEC §3 "Admin"): 200 `ok` while every listener of the configuration in force
/// is bound and serving, else 503 with one line saying why — `starting` before the listeners are bound,
/// `draining` once a stop began (so a load balancer stops sending), or the listeners that are not serving.
///
/// Written by the daemon as things happen, read by the admin endpoint; both cheap.
public final class HealthState: Sendable {
    public enum Phase: Sendable, Equatable {
        /// Before every listener is bound (no `READY=1` yet).
        case starting
        /// Serving.
        case serving
        /// A stop began: listeners closed, connections draining.
        case draining
    }

    /// The answer for one request.
    public struct Report: Sendable, Equatable {
        /// True: 200; false: 503.
        public var healthy: Bool
        /// `ok`, or the reason (one line).
        public var reason: String
    }

    /// How long a listener counts as not serving after accept() failed (EMFILE, ...): its own backoff is
    /// a quarter second, and a probe should see the trouble, not just miss it.
    static let acceptFailureWindow: TimeAmount = .seconds(2)

    private struct State {
        var phase: Phase = .starting
        /// Listeners of the configuration in force that are not bound, with why.
        var unbound: [String: String] = [:]
        /// Listeners whose accept() failed recently: until when they count as not serving, and why.
        var acceptFailures: [String: (until: NIODeadline, reason: String)] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    public var phase: Phase { state.withLock { $0.phase } }

    /// Every listener is bound: serving.
    func started() {
        state.withLock { if $0.phase == .starting { $0.phase = .serving } }
    }

    /// A stop began.
    func draining() {
        state.withLock { $0.phase = .draining }
    }

    /// The listeners of the configuration in force that could not be bound (replaces the previous set).
    func setUnbound(_ unbound: [String: String]) {
        state.withLock { $0.unbound = unbound }
    }

    /// accept() failed on `listener`; it pauses accepting for a while.
    func acceptFailed(listener: String, reason: String, now: NIODeadline = .now()) {
        state.withLock { $0.acceptFailures[listener] = (now + Self.acceptFailureWindow, reason) }
    }

    /// The answer now.
    public func report(now: NIODeadline = .now()) -> Report {
        state.withLock { state in
            switch state.phase {
            case .starting:
                return Report(healthy: false, reason: "starting")
            case .draining:
                return Report(healthy: false, reason: "draining")
            case .serving:
                break
            }
            var problems = state.unbound.keys.sorted().map { "listener '\($0)' is not bound: \(state.unbound[$0]!)" }
            for name in state.acceptFailures.keys.sorted() {
                guard let failure = state.acceptFailures[name], failure.until > now else {
                    state.acceptFailures[name] = nil
                    continue
                }
                problems.append("listener '\(name)' is not accepting: \(failure.reason)")
            }
            guard !problems.isEmpty else { return Report(healthy: true, reason: "ok") }
            return Report(healthy: false, reason: problems.joined(separator: "; "))
        }
    }
}
