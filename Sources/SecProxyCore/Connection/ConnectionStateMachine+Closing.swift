import NIOCore

/// Errors, aborts and the end of a connection.
extension ConnectionStateMachine {
    /// An error seen on `side`'s channel.
    mutating func errorCaught(on side: ConnectionSide, _ kind: ErrorKind) -> Action {
        switch kind {
        case .reset:
            // The channel closes by itself; `channelInactive` delivers what the other side still has.
            if firstCloser == nil { firstCloser = side }
            return .none
        case .proxyProtocol(let detail):
            return close(.proxyProtocolInvalid, detail: detail, mode: .abort)
        case .tls(let detail):
            switch state {
            case .idle, .awaitingProxyHeader, .handshaking:
                return close(.handshakeFailed, detail: detail, mode: .abort)
            case .connecting, .forwarding:
                // The TLS handler closes its channel; what the other side still has is delivered first.
                record(.error, detail: detail)
                if firstCloser == nil { firstCloser = side }
                return .none
            case .closing, .closed, .modifying:
                return .none
            }
        case .other(let detail):
            return close(.error, detail: detail, mode: .abort)
        }
    }

    /// Ends the connection at once for `reason` (a refusal after the PROXY header, a shutdown).
    mutating func abort(_ reason: CloseReason, detail: String? = nil) -> Action {
        close(reason, detail: detail, mode: .abort)
    }

    /// Records `reason` (unless one was decided already) and closes every open channel with `mode`.
    mutating func close(_ reason: CloseReason, detail: String?, mode: CloseMode) -> Action {
        record(reason, detail: detail)
        switch state {
        case .closing, .closed:
            return .none
        case .idle, .awaitingProxyHeader, .handshaking, .connecting, .forwarding, .modifying:
            return closeOpenChannels(mode: mode)
        }
    }

    private mutating func record(_ reason: CloseReason, detail: String?) {
        guard self.reason == nil else { return }
        self.reason = reason
        self.detail = detail
    }

    /// Moves to `.closing` and closes what is open; `.finish` when nothing is.
    mutating func closeOpenChannels(mode: CloseMode) -> Action {
        if case .forwarding(var forwarding) = state, mode == .abort {
            forwarding.fromClient.abort()
            forwarding.fromBackend.abort()
        }
        state = .closing
        let close = Close(
            client: clientOpen ? mode : nil, backend: backendOpen ? mode : nil, cancelConnect: connectInFlight
        )
        if close == Close() { return finishIfClosed() }
        return .close(close)
    }

    /// `.finish` once both channels are closed and no connect attempt is in flight.
    mutating func finishIfClosed() -> Action {
        guard case .closing = state, !clientOpen, !backendOpen, !connectInFlight else { return .none }
        state = .closed
        return .finish
    }
}
