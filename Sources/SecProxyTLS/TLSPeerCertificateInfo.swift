/// What a peer certificate says about its holder (for `allowed_clients` and logs).
public struct TLSPeerCertificateInfo: Sendable, Equatable {
    /// Subject common name.
    public var commonName: String?
    /// DNS subject alternative names.
    public var dnsNames: [String]
    /// URI subject alternative names (e.g. SPIFFE IDs).
    public var uris: [String]

    public init(commonName: String?, dnsNames: [String], uris: [String]) {
        self.commonName = commonName
        self.dnsNames = dnsNames
        self.uris = uris
    }
}
