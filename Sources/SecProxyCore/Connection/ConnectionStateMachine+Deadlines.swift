import NIOCore

/// The handshake deadline, idle_timeout and half_close_timeout: the one place that decides when a
/// connection must be looked at again.
extension ConnectionStateMachine {
    /// The next moment the connection must be looked at (`timerFired`), or nil when no timer is needed.
    ///
    /// The handshake deadline is absolute from the accept; while forwarding, `idle_timeout` runs from
    /// the last byte either way, and once one side's input ended, `half_close_timeout` from the last
    /// byte of the directions still moving (never before the half-close).
    var deadline: NIODeadline? {
        switch state {
        case .awaitingProxyHeader(let deadline), .handshaking(let deadline):
            return deadline
        case .forwarding(let forwarding):
            let idle =
                max(forwarding.fromClient.lastActivity, forwarding.fromBackend.lastActivity)
                + configuration.idleTimeout
            guard let halfClosedAt = forwarding.halfClosedAt else { return idle }
            var latest = halfClosedAt
            if !forwarding.fromClient.isFinished { latest = max(latest, forwarding.fromClient.lastActivity) }
            if !forwarding.fromBackend.isFinished { latest = max(latest, forwarding.fromBackend.lastActivity) }
            return min(idle, latest + configuration.halfCloseTimeout)
        case .idle, .connecting, .closing, .closed, .modifying:
            return nil
        }
    }

    /// The timer set for `deadline` fired. Aborts when the deadline passed; else `.none` (the driver
    /// re-arms the timer for the new `deadline`).
    mutating func timerFired(now: NIODeadline) -> Action {
        guard let deadline, deadline <= now else { return .none }
        switch state {
        case .awaitingProxyHeader, .handshaking:
            return close(.handshakeTimeout, detail: nil, mode: .abort)
        case .forwarding:
            return close(.idleTimeout, detail: nil, mode: .abort)
        case .idle, .connecting, .closing, .closed, .modifying:
            return .none
        }
    }

    /// Whether the connection is still before its TLS handshake's end.
    var isBeforeHandshakeEnd: Bool {
        switch state {
        case .idle, .awaitingProxyHeader, .handshaking: return true
        case .connecting, .forwarding, .closing, .closed, .modifying: return false
        }
    }
}
