/// The parsed contents of every file a TLS listener names: what `TLSServerContext` is built from besides its
/// settings, so that the context never opens a file itself.
///
/// Made from a `TLSFileSet`: when the set is the one `--check-config`'s checks parsed, the context serves,
/// trusts and digests exactly what was checked.
public struct TLSServerFiles: Sendable {
    /// The default certificate.
    public let certificate: TLSIdentity
    /// One per `TLSServerConfiguration.sniCertificates` entry, in that order.
    public let sniCertificates: [TLSIdentity]
    /// `clientCAFile`, parsed.
    public let clientCA: TLSCertificateAuthorities?
    /// `clientCRLFile`, parsed; nil without `clientCAFile` (which it is for).
    public let clientCRL: TLSRevocationList?

    /// Takes every file `configuration` names from `files` (reading each on first use): the client CA and
    /// CRL, then each certificate with its key and OCSP response.
    ///
    /// - Throws: `TLSError` whose reason names the file and says what is wrong with it.
    public init(loading configuration: TLSServerConfiguration, from files: inout TLSFileSet) throws {
        if let caFile = configuration.clientCAFile {
            self.clientCA = try files.certificateAuthorities(caFile).mapError {
                TLSError(
                    reason: "client CA \(caFile): \($0.reason)",
                    description: "loading client CA: \($0.description)"
                )
            }.get()
            self.clientCRL = try configuration.clientCRLFile.map { crlFile in
                try files.revocationList(crlFile).mapError {
                    TLSError(
                        reason: "client CRL \(crlFile): \($0.reason)",
                        description: "loading client CRL: \($0.description)"
                    )
                }.get()
            }
        } else {
            self.clientCA = nil
            self.clientCRL = nil
        }
        self.certificate = try TLSIdentity(
            chainFile: configuration.certificateChainFile,
            keyFile: configuration.privateKeyFile,
            ocspResponseFile: configuration.ocspResponseFile,
            from: &files
        )
        self.sniCertificates = try configuration.sniCertificates.map { entry in
            try TLSIdentity(
                chainFile: entry.chainFile,
                keyFile: entry.keyFile,
                ocspResponseFile: entry.ocspResponseFile,
                from: &files
            )
        }
    }
}

extension TLSServerConfiguration {
    /// The files that hold secrets (private keys), for `TLSFileSet(secretPaths:)`.
    var secretPaths: [String] {
        [self.privateKeyFile] + self.sniCertificates.map(\.keyFile)
    }
}
