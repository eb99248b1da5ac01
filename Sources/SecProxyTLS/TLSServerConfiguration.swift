/// Settings of a TLS listener (`[listener.tls]`).
public struct TLSServerConfiguration: Sendable {
    /// PEM certificate chain, leaf first.
    public var certificateChainFile: String
    /// PEM private key of the leaf (PKCS#8 or traditional RSA/EC; not encrypted).
    public var privateKeyFile: String
    /// Extra certificates selected by SNI.
    public var sniCertificates: [TLSSNICertificate] = []
    /// Lowest version accepted.
    public var minimumVersion: TLSProtocolVersion = .tls12
    /// Highest version accepted.
    public var maximumVersion: TLSProtocolVersion = .tls13
    /// TLS 1.2 cipher list in OpenSSL syntax; "" = ECDHE with AEAD ciphers only.
    public var cipherList: String = ""
    /// TLS 1.3 cipher suites; "" = OpenSSL's default.
    public var cipherSuites: String = ""
    /// Key exchange groups, OpenSSL syntax.
    public var groups: String = "X25519:P-256:P-384"
    /// ALPN protocols in server preference order; [] = no ALPN; no overlap = continue without ALPN.
    public var alpn: [String] = []
    /// false: no TLS 1.2 tickets (TLS 1.3 resumes from the server's session cache).
    public var sessionTickets: Bool = true
    /// Session ticket keys, the first encrypts, all decrypt (`TLSTicketKey.load(file:)`); [] = random keys
    /// rotated hourly. Ignored when `sessionTickets` is false.
    public var ticketKeys: [TLSTicketKey] = []
    /// PEM CA bundle; set = request a client certificate and verify it against these CAs.
    public var clientCAFile: String? = nil
    /// With `clientCAFile`: true allows clients without a certificate (a presented one must still verify).
    public var clientCertificateOptional: Bool = false
    /// PEM CRL file checked for client certificates.
    public var clientCRLFile: String? = nil
    /// The listener's name. Part of the session ID context, so that sessions never cross listeners.
    public var listenerName: String = ""
    /// `allowed_clients` in a canonical form ("cn:billing", "dns:worker.internal" lowercased,
    /// "uri:spiffe://..."). Not enforced here (the data path checks the peer certificate of every
    /// handshake, resumed or not), but part of the session ID context: a change refuses earlier sessions.
    public var allowedClients: [String] = []
    /// true: no or unknown SNI is refused with an unrecognized_name alert.
    public var strictSNI: Bool = false
    /// DER OCSP response for the default certificate, stapled when a client asks; nil = no stapling.
    public var ocspResponseFile: String? = nil

    public init(certificateChainFile: String, privateKeyFile: String) {
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
    }
}
