/// One extra server certificate, chosen by the client's SNI.
public struct TLSSNICertificate: Sendable, Equatable {
    /// PEM certificate chain, leaf first.
    public var chainFile: String
    /// PEM private key of the leaf.
    public var keyFile: String
    /// Names this certificate answers for; `nil` = the certificate's DNS SANs. "*.x" matches one label.
    public var names: [String]?
    /// DER OCSP response for this certificate, stapled when a client asks; nil = no stapling.
    public var ocspResponseFile: String?

    public init(chainFile: String, keyFile: String, names: [String]? = nil, ocspResponseFile: String? = nil) {
        self.chainFile = chainFile
        self.keyFile = keyFile
        self.names = names
        self.ocspResponseFile = ocspResponseFile
    }
}
