/// User inbound events fired by `TLSHandler`.
public enum TLSEvent: Sendable {
    /// The handshake finished; fired before any application data of the connection.
    case handshakeCompleted(TLSSessionInfo)
}
