import NIOCore

/// Everything known about one client connection when it ends: the fields of its log line.
public struct ConnectionSummary: Sendable {
    public var listener: String
    /// The client: the socket's peer, or the address a PROXY header named.
    public var clientAddress: SocketAddress?
    /// `IP:PORT`, IPv6 in brackets; "" when unknown. Formatted when asked for, so that a connection's end
    /// costs no address formatting when its line is not logged.
    public var client: String { clientAddress?.logDescription ?? "" }
    /// The backend as written in the config, or "" when none was connected.
    public var backend: String
    public var sni: String?
    public var alpn: String?
    /// OpenSSL's name, e.g. `TLSv1.3`; nil on plain listeners and before the handshake finished.
    public var tlsVersion: String?
    public var cipher: String?
    /// nil where not applicable (plain listeners, failed handshakes).
    public var resumed: Bool?
    /// Application bytes received from the client.
    public var bytesIn: Int
    /// Application bytes sent to the client.
    public var bytesOut: Int
    public var durationMilliseconds: Int64
    public var reason: CloseReason
    /// A short technical detail for the reason (OpenSSL's reason for `handshake_failed`, the errno text for `error`).
    public var detail: String?

    public init(
        listener: String, clientAddress: SocketAddress?, backend: String = "", sni: String? = nil, alpn: String? = nil,
        tlsVersion: String? = nil, cipher: String? = nil, resumed: Bool? = nil, bytesIn: Int = 0, bytesOut: Int = 0,
        durationMilliseconds: Int64 = 0, reason: CloseReason, detail: String? = nil
    ) {
        self.listener = listener
        self.clientAddress = clientAddress
        self.backend = backend
        self.sni = sni
        self.alpn = alpn
        self.tlsVersion = tlsVersion
        self.cipher = cipher
        self.resumed = resumed
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.durationMilliseconds = durationMilliseconds
        self.reason = reason
        self.detail = detail
    }
}

/// Receives the data path's events; the daemon turns them into log lines and metrics.
/// Called on event-loop threads: implementations must be cheap and thread-safe.
public protocol ConnectionObserver: Sendable {
    /// A client connection ended (exactly once per accepted connection, rejected ones included).
    func connectionClosed(_ summary: ConnectionSummary)
    /// A TLS handshake finished.
    func handshakeCompleted(listener: String, tlsVersion: String, resumed: Bool, seconds: Double)
    /// A connect to `backend` failed (refused, timed out, unreachable).
    func backendConnectFailed(listener: String, backend: String, error: any Error)
    /// `accept()` failed (EMFILE, ENFILE, ...); accepting pauses for `backoff` and resumes by itself.
    func acceptFailed(listener: String, error: IOError, backoff: TimeAmount)
}

extension SocketAddress {
    /// As logs show addresses: `IP:PORT`, IPv6 in brackets (`[::1]:8443`), `unix:PATH`.
    public var logDescription: String {
        switch self {
        case .v4:
            return "\(ipAddress ?? ""):\(port ?? 0)"
        case .v6:
            return "[\(ipAddress ?? "")]:\(port ?? 0)"
        case .unixDomainSocket:
            return "unix:\(pathname ?? "")"
        }
    }
}
