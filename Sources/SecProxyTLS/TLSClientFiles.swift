/// The parsed contents of every file a TLS client names: what `TLSClientContext` is built from besides its
/// settings, so that the context never opens a file itself and trusts exactly the certificates parsed here.
public struct TLSClientFiles: Sendable {
    /// `trustRootsFile`, parsed.
    public let trustRoots: TLSCertificateAuthorities?
    /// `certificateChainFile` with `privateKeyFile`, parsed.
    public let certificate: TLSIdentity?

    /// Takes every file `configuration` names from `files` (reading each on first use).
    ///
    /// - Throws: `TLSError` whose reason names the file and says what is wrong with it, or that a client
    ///   certificate lacks its key (or the key its certificate).
    public init(loading configuration: TLSClientConfiguration, from files: inout TLSFileSet) throws {
        self.trustRoots = try configuration.trustRootsFile.map { file in
            try files.certificateAuthorities(file).mapError {
                TLSError(
                    reason: "trust roots \(file): \($0.reason)",
                    description: "loading trust roots: \($0.description)"
                )
            }.get()
        }
        switch (configuration.certificateChainFile, configuration.privateKeyFile) {
        case (nil, nil):
            self.certificate = nil
        case (let chainFile?, let keyFile?):
            self.certificate = try TLSIdentity(
                chainFile: chainFile,
                keyFile: keyFile,
                ocspResponseFile: nil,
                from: &files
            )
        default:
            throw TLSError.own("a client certificate needs both a certificate chain and a private key")
        }
    }
}

extension TLSClientConfiguration {
    /// The files that hold secrets (the private key), for `TLSFileSet(secretPaths:)`.
    var secretPaths: [String] {
        self.privateKeyFile.map { [$0] } ?? []
    }
}
