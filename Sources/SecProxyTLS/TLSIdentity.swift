/// A certificate chain and its private key, each parsed once from its file, and the OCSP response to staple
/// for the leaf: what one `SSL_CTX` presents.
public struct TLSIdentity: Sendable {
    /// Leaf first; never empty.
    public let chain: [TLSCertificate]
    /// The leaf's key (its `EVP_PKEY` wipes the key when freed).
    public let key: TLSPrivateKey
    /// The key's file, naming it in messages.
    let keyPath: String
    /// The OCSP response checked against the leaf, if one is configured.
    let ocspResponse: TLSOCSPResponse?

    /// Takes the chain, the key and the OCSP response from `files` (reading each on first use).
    ///
    /// - Throws: `TLSError` whose reason names the file ("certificate PATH: not PEM", "key PATH: ...",
    ///   "OCSP response PATH: ..."), as the contexts always said.
    init(chainFile: String, keyFile: String, ocspResponseFile: String?, from files: inout TLSFileSet) throws {
        let chain = try files.certificateChain(chainFile).mapError {
            TLSError(
                reason: "certificate \(chainFile): \($0.reason)",
                description: "loading certificate chain: \($0.description)"
            )
        }.get()
        self.chain = chain
        self.key = try files.privateKey(keyFile).mapError {
            TLSError(reason: "key \(keyFile): \($0.reason)", description: "loading private key: \($0.description)")
        }.get()
        self.keyPath = keyFile
        if let file = ocspResponseFile {
            self.ocspResponse = try files.ocspResponse(file, for: chain).mapError {
                TLSError(
                    reason: "OCSP response \(file): \($0.reason)",
                    description: "loading OCSP response: \($0.description)"
                )
            }.get()
        } else {
            self.ocspResponse = nil
        }
    }
}
