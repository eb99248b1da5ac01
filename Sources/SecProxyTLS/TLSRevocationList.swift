/// A CRL file (`client_crl`), parsed once from the bytes of one read.
public struct TLSRevocationList: Sendable {
    /// The file it was read from.
    public let path: String
    /// The file's bytes, which the session ID context digests (`TLSSessionIDContext`).
    let bytes: [UInt8]
    /// Its CRLs; at least one.
    let crls: TLSCRLFile
}
