import COpenSSL
import CSecProxyOpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Checks of single TLS settings, for `--check-config` to point at the right key.
/// Each returns nil when OpenSSL accepts the value, else the error (OpenSSL's reason). The `validate...File`
/// functions read a file on their own; a preparation checks the objects of its `TLSFileSet` instead.
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
        var files = TLSFileSet()
        return files.certificateAuthorities(path).failure
    }

    /// A CRL file: readable, PEM, at least one CRL, all parse.
    public static func validateCRLFile(_ path: String) -> TLSError? {
        var files = TLSFileSet()
        return files.revocationList(path).failure
    }

    /// A session ticket key file (`TLSTicketKey.load(file:)`): readable, at least one key, every key
    /// base64 of 80 bytes; the error names the line.
    public static func validateTicketKeyFile(_ path: String) -> TLSError? {
        var files = TLSFileSet()
        return files.ticketKeys(path).failure
    }

    /// An OCSP response to staple: readable, DER, parses, status "successful", a basic response.
    /// (Whether it answers for the certificate is checked when the context is built.)
    public static func validateOCSPResponseFile(_ path: String) -> TLSError? {
        var files = TLSFileSet()
        return files.ocspResponse(path, for: nil).failure
    }

    /// What `--check-config` (and a reload) says about a stapled OCSP response.
    public enum OCSPResponseCheck: Sendable, Equatable {
        /// Status good, within its validity window: stapled.
        case good
        /// Usable but not stapled (expired, not yet valid, status unknown): a warning; the reason
        /// reads after the file's name ("expired at ...; it is not stapled").
        case notStapled(reason: String)
        /// Unusable (does not parse, not for the certificate, certificate revoked): an error.
        case invalid(TLSError)
    }

    /// Checks the OCSP response at `path` for the leaf of `certificateChainFile` at `now`: it must parse,
    /// answer for that certificate, and say `good` within thisUpdate...nextUpdate to be stapled.
    /// When the certificate cannot be read (reported at its own key), only the structure is checked.
    public static func checkOCSPResponseFile(
        _ path: String,
        certificateChainFile: String,
        now: Date = Date()
    ) -> OCSPResponseCheck {
        var files = TLSFileSet()
        let chain = try? files.certificateChain(certificateChainFile).get()
        switch files.ocspResponse(path, for: chain) {
        case .success(let response):
            return self.check(response, at: now)
        case .failure(let error):
            return .invalid(error)
        }
    }

    /// What to say about stapling `response` (parsed by `TLSFileSet.ocspResponse(_:for:)`) at `now`.
    /// A response parsed without a certificate was only checked for its structure: `.good`.
    public static func check(_ response: TLSOCSPResponse, at now: Date) -> OCSPResponseCheck {
        let name = response.certificate?.displayName ?? ""
        switch response.verdict(at: now) {
        case .staple:
            return .good
        case .revoked(let time):
            return .invalid(TLSError(reason: "certificate \(name) is revoked (since \(Self.utc(time)))"))
        case .unknownStatus:
            return .notStapled(reason: "gives the status of certificate \(name) as unknown; it is not stapled")
        case .notYetValid(let thisUpdate):
            return .notStapled(reason: "is not valid before \(Self.utc(thisUpdate)) (thisUpdate); it is not stapled")
        case .expired(let nextUpdate):
            return .notStapled(
                reason: "expired at \(Self.utc(nextUpdate)) (nextUpdate); it is not stapled until a fresh response replaces it"
            )
        }
    }

    /// "2026-11-20 10:00:00 UTC".
    static func utc(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        guard gmtime_r(&seconds, &parts) != nil else { return "\(seconds)" }
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) UTC"
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

extension Result {
    /// The error, or nil.
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
