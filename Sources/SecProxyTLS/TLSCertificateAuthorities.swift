/// A CA bundle (`client_ca`, backend `ca`), parsed once from the bytes of one read: the certificates a context
/// trusts are exactly these, never the file read again by OpenSSL.
public struct TLSCertificateAuthorities: Sendable {
    /// The file it was read from.
    public let path: String
    /// The file's bytes, which the session ID context digests (`TLSSessionIDContext`).
    let bytes: [UInt8]
    /// Every certificate of the bundle, in file order; never empty.
    public let certificates: [TLSCertificate]
    /// The CRLs the bundle carries besides (added to the store, as `SSL_CTX_load_verify_file` would), or why
    /// they do not parse: an error of the context that uses the bundle, not of the bundle's certificates.
    let crls: Result<TLSCRLFile, TLSError>
}
