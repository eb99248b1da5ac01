import COpenSSL
import CSecProxyOpenSSL

/// Checks of single TLS settings, for `--check-config` to point at the right key.
/// Each returns nil when OpenSSL accepts the value, else the error (OpenSSL's reason).
public enum TLSSettingsValidation {
    /// A TLS 1.2 cipher list; "" (the secure default) is valid.
    public static func validateCipherList(_ s: String) -> TLSError? {
        guard !s.isEmpty else { return nil }
        return self.withScratchContext { ctx in
            SSL_CTX_set_cipher_list(ctx, s) == 1
                ? nil : TLSError.drainingErrorQueue(operation: "cipher list '\(s)'", fallback: "rejected")
        }
    }

    /// TLS 1.3 cipher suites; "" (OpenSSL's default) is valid.
    public static func validateCipherSuites(_ s: String) -> TLSError? {
        guard !s.isEmpty else { return nil }
        return self.withScratchContext { ctx in
            SSL_CTX_set_ciphersuites(ctx, s) == 1
                ? nil : TLSError.drainingErrorQueue(operation: "cipher suites '\(s)'", fallback: "no cipher match")
        }
    }

    /// A key exchange group list ("X25519:P-256"); "" (OpenSSL's default) is valid.
    public static func validateGroups(_ s: String) -> TLSError? {
        guard !s.isEmpty else { return nil }
        return self.withScratchContext { ctx in
            csp_ssl_ctx_set1_groups_list(ctx, s) == 1
                ? nil : TLSError.drainingErrorQueue(operation: "groups '\(s)'", fallback: "unknown group")
        }
    }

    /// A CA bundle: readable, PEM, at least one certificate, all parse.
    public static func validateCAFile(_ path: String) -> TLSError? {
        do {
            _ = try TLSCertificate.loadChain(file: path)
            return nil
        } catch {
            return (error as? TLSError) ?? TLSError(reason: "\(error)")
        }
    }

    /// A CRL file: readable, PEM, at least one CRL, all parse.
    public static func validateCRLFile(_ path: String) -> TLSError? {
        do {
            _ = try TLSCRLFile.load(file: path)
            return nil
        } catch {
            return (error as? TLSError) ?? TLSError(reason: "\(error)")
        }
    }

    /// A session ticket key file (`TLSTicketKey.load(file:)`): readable, at least one key, every key
    /// base64 of 80 bytes; the error names the line.
    public static func validateTicketKeyFile(_ path: String) -> TLSError? {
        do {
            _ = try TLSTicketKey.load(file: path)
            return nil
        } catch {
            return (error as? TLSError) ?? TLSError(reason: "\(error)")
        }
    }

    /// An OCSP response to staple: readable, DER, parses, status "successful", a basic response.
    /// (Whether it answers for the certificate is checked when the context is built.)
    public static func validateOCSPResponseFile(_ path: String) -> TLSError? {
        do {
            _ = try TLSOCSPResponse.load(file: path)
            return nil
        } catch {
            return (error as? TLSError) ?? TLSError(reason: "\(error)")
        }
    }

    private static func withScratchContext(_ body: (OpaquePointer) -> TLSError?) -> TLSError? {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            return TLSError.drainingErrorQueue(operation: "SSL_CTX_new", fallback: "cannot create SSL_CTX")
        }
        defer { SSL_CTX_free(ctx) }
        let result = body(ctx)
        ERR_clear_error()
        return result
    }
}
