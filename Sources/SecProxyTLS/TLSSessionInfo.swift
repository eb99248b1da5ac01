/// The outcome of a completed handshake.
public struct TLSSessionInfo: Sendable, Equatable {
    /// OpenSSL's protocol name: "TLSv1.3".
    public var version: String
    /// OpenSSL's cipher name: "TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256".
    public var cipher: String
    /// The SNI the client sent (server side) or the name we sent (client side).
    public var serverName: String?
    /// The negotiated ALPN protocol.
    public var alpn: String?
    /// Whether the session was resumed.
    public var resumed: Bool
    /// The peer's certificate (the client's with mTLS; the server's on the client side).
    public var peerCertificate: TLSPeerCertificateInfo?

    public init(
        version: String,
        cipher: String,
        serverName: String?,
        alpn: String?,
        resumed: Bool,
        peerCertificate: TLSPeerCertificateInfo?
    ) {
        self.version = version
        self.cipher = cipher
        self.serverName = serverName
        self.alpn = alpn
        self.resumed = resumed
        self.peerCertificate = peerCertificate
    }
}
