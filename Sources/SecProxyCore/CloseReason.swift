/// Why a client connection ended; the `reason` field of its log line (SPEC §3).
public enum CloseReason: String, Sendable, CaseIterable {
    /// The client's FIN or RST reached secproxy first.
    case clientClosed = "client_closed"
    /// The backend's FIN or RST reached secproxy first.
    case backendClosed = "backend_closed"
    /// No byte in either direction for `idle_timeout`, or a half-closed pair quiet for `half_close_timeout`.
    case idleTimeout = "idle_timeout"
    /// The TLS handshake did not finish within `handshake_timeout` of the accept.
    case handshakeTimeout = "handshake_timeout"
    /// The TLS handshake failed (bad bytes, no shared cipher, ...).
    case handshakeFailed = "handshake_failed"
    /// Every backend refused or failed the connect.
    case backendUnavailable = "backend_unavailable"
    /// The last backend connect attempt timed out.
    case connectTimeout = "connect_timeout"
    /// Over the process-wide `max_connections`.
    case maxConnections = "max_connections"
    /// Over `max_connections_per_ip`.
    case perIPLimit = "per_ip_limit"
    /// Over `max_new_connections_per_ip`.
    case rateLimited = "rate_limited"
    /// A malformed or missing PROXY header from the client.
    case proxyProtocolInvalid = "proxy_protocol_invalid"
    /// Still open when the drain on stop ran out.
    case shutdown
    /// Anything else (an unexpected I/O error).
    case error
}
