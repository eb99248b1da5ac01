/// Settings of a TLS client: backend re-encryption (`[listener.backend_tls]`) and tests.
public struct TLSClientConfiguration: Sendable {
    /// PEM CA bundle the server's chain must verify against; nil = no verification at all.
    public var trustRootsFile: String? = nil
    /// Name sent as SNI and verified against the server certificate (when `trustRootsFile` is set);
    /// a `serverName` given to `TLSHandler` overrides it.
    public var verifyHostname: String? = nil
    /// PEM client certificate chain for mTLS, leaf first.
    public var certificateChainFile: String? = nil
    /// PEM private key of the client certificate.
    public var privateKeyFile: String? = nil
    /// Lowest version offered.
    public var minimumVersion: TLSProtocolVersion = .tls12
    /// Highest version offered.
    public var maximumVersion: TLSProtocolVersion = .tls13
    /// ALPN protocols offered, in preference order.
    public var alpn: [String] = []
    /// TLS 1.2 cipher list; "" = ECDHE with AEAD ciphers only.
    public var cipherList: String = ""
    /// TLS 1.3 cipher suites; "" = OpenSSL's default.
    public var cipherSuites: String = ""
    /// Key exchange groups; "" = OpenSSL's default.
    public var groups: String = ""
    /// Keep the last session per server name and offer it on the next connection.
    public var sessionResumption: Bool = true

    public init() {}
}
