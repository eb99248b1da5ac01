/// User inbound events fired by `TLSHandler`.
public enum TLSEvent: Sendable {
    /// The handshake finished; fired before any application data of the connection.
    case handshakeCompleted(TLSSessionInfo)
}

/// User outbound events `TLSHandler` acts upon (`triggerUserOutboundEvent`).
public enum TLSOutboundEvent: Sendable {
    /// Close the channel at once: no close_notify, writes still queued are dropped. For aborts
    /// (timeouts, shutdown), where waiting for a peer that does not read is not wanted.
    case abort
}
