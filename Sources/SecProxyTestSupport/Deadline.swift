import Foundation

/// A point in time after which a wait gives up; built from a timeout in seconds.
public struct Deadline: Sendable {
    /// When the wait gives up, on the monotonic clock.
    public let instant: ContinuousClock.Instant
    /// The timeout it was made from, for messages.
    public let timeout: TimeInterval

    /// A deadline `seconds` from now.
    public init(seconds: TimeInterval) {
        self.timeout = seconds
        self.instant = ContinuousClock.now.advanced(by: .milliseconds(Int64((seconds * 1000).rounded())))
    }

    /// A deadline `seconds` from now.
    public static func after(_ seconds: TimeInterval) -> Deadline { Deadline(seconds: seconds) }

    /// True once the deadline is reached.
    public var hasPassed: Bool { ContinuousClock.now >= instant }

    /// Seconds left (0 when passed).
    public var remaining: TimeInterval {
        let left = ContinuousClock.now.duration(to: instant)
        let seconds = Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
        return max(0, seconds)
    }

    /// The remaining time as a `Date`, for `NSCondition.wait(until:)`.
    public var date: Date { Date(timeIntervalSinceNow: remaining) }
}

/// A wait that ran out of time; its message says what was awaited and what was seen.
public struct DeadlineExceeded: Error, CustomStringConvertible, LocalizedError {
    /// What the wait was for, and the state seen when it gave up.
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
    public var errorDescription: String? { message }
}

/// Polls `condition` until it returns true or `timeout` seconds have passed.
///
/// The only sleep is the short pause between two polls; the wait ends as soon as the condition holds.
/// - Parameters:
///   - timeout: seconds before giving up with `DeadlineExceeded`.
///   - pollInterval: pause between two polls.
///   - description: what is awaited, for the failure message.
///   - state: called on failure to describe what was seen instead.
///   - condition: the predicate to poll.
public func waitUntil(
    timeout: TimeInterval,
    pollInterval: TimeInterval = 0.005,
    _ description: @autoclosure () -> String = "condition",
    state: () -> String = { "" },
    _ condition: () throws -> Bool
) throws {
    let deadline = Deadline(seconds: timeout)
    while true {
        if try condition() { return }
        if deadline.hasPassed {
            let seen = state()
            throw DeadlineExceeded(
                "timed out after \(timeout)s waiting for: \(description())" + (seen.isEmpty ? "" : "\nseen: \(seen)")
            )
        }
        Thread.sleep(forTimeInterval: min(pollInterval, max(deadline.remaining, 0.001)))
    }
}

/// Polls `produce` until it returns a value or `timeout` seconds have passed, and returns the value.
public func waitForValue<T>(
    timeout: TimeInterval,
    pollInterval: TimeInterval = 0.005,
    _ description: @autoclosure () -> String = "value",
    state: () -> String = { "" },
    _ produce: () throws -> T?
) throws -> T {
    var result: T?
    try waitUntil(timeout: timeout, pollInterval: pollInterval, description(), state: state) {
        result = try produce()
        return result != nil
    }
    return result!
}

/// Runs `operation`, failing with `DeadlineExceeded` if it does not finish within `timeout` seconds
/// (the operation is cancelled then).
public func withDeadline<T: Sendable>(
    _ timeout: TimeInterval,
    _ description: String = "operation",
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int64(timeout * 1000)))
            throw DeadlineExceeded("timed out after \(timeout)s: \(description)")
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
