import COpenSSL
import CSecProxyOpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A DER OCSP response to staple, checked when loaded and immutable afterwards. The status callback
/// hands every handshake that asks for it a copy (OpenSSL frees the copy).
public final class TLSOCSPResponse: @unchecked Sendable {
    /// What the response says about the certificate it was loaded for.
    struct CertificateStatus: Sendable, Equatable {
        enum Kind: Sendable, Equatable {
            case good
            /// With the revocation time.
            case revoked(Date)
            case unknown
        }
        var kind: Kind
        /// `thisUpdate`: the status is known to be correct at this time.
        var thisUpdate: Date
        /// `nextUpdate`: newer information will be available then; nil = at any time (RFC 6960 4.2.2.1).
        var nextUpdate: Date?
    }

    /// Whether to staple the response at some instant.
    enum Verdict: Sendable, Equatable {
        /// Status good, within thisUpdate...nextUpdate.
        case staple
        /// The certificate is revoked: a configuration error.
        case revoked(Date)
        /// The responder does not know the certificate: pointless to staple.
        case unknownStatus
        /// `thisUpdate` is still ahead (beyond the allowed clock skew).
        case notYetValid(thisUpdate: Date)
        /// `nextUpdate` has passed: must-staple clients would fail hard on it.
        case expired(nextUpdate: Date)
    }

    /// How far `thisUpdate` may be ahead of our clock (responder and server clocks differ a little;
    /// OpenSSL's `OCSP_check_validity` documentation suggests five minutes).
    static let allowedClockSkew: TimeInterval = 300

    /// The file it was read from.
    public let path: String
    /// The whole DER `OCSPResponse`, as sent.
    let der: [UInt8]
    /// The certificate it was loaded for, whose status `status` is; nil when loaded without one.
    let certificate: TLSCertificate?
    /// The status of the certificate it was loaded for; nil when loaded without a certificate.
    let status: CertificateStatus?

    private init(path: String, der: [UInt8], certificate: TLSCertificate?, status: CertificateStatus?) {
        self.path = path
        self.der = der
        self.certificate = certificate
        self.status = status
    }

    /// What to do with the response at `now`. Without a known status (loaded without a certificate):
    /// `.staple`, as the structure is all that could be checked.
    func verdict(at now: Date) -> Verdict {
        guard let status = self.status else { return .staple }
        switch status.kind {
        case .revoked(let time):
            return .revoked(time)
        case .unknown:
            return .unknownStatus
        case .good:
            break
        }
        if status.thisUpdate.timeIntervalSince(now) > Self.allowedClockSkew {
            return .notYetValid(thisUpdate: status.thisUpdate)
        }
        if let nextUpdate = status.nextUpdate, nextUpdate <= now {
            return .expired(nextUpdate: nextUpdate)
        }
        return .staple
    }

    /// At run time: whether the response may still be stapled at `now` (not past `nextUpdate`).
    func isFresh(at now: Date) -> Bool {
        guard let nextUpdate = self.status?.nextUpdate else { return true }
        return now < nextUpdate
    }

    /// Reads and checks a DER OCSP response: it must parse as one `OCSPResponse` with nothing after
    /// it, have status "successful" and carry a basic response. With `certificate`, the response must
    /// also answer for it (the same issuer and serial when `issuer` is known, else the same serial),
    /// which catches the stale file left over from the previous certificate, and its status and
    /// validity window are read (`status`, `verdict(at:)`).
    ///
    /// - Throws: `TLSError` whose reason says what is wrong (the file is named by the caller).
    static func load(
        der: [UInt8],
        origin file: String,
        certificate: TLSCertificate?,
        issuer: TLSCertificate?
    ) throws -> TLSOCSPResponse {
        guard !der.isEmpty else {
            throw TLSError.own("empty file", detail: file)
        }
        if FileBytes.contains(der, "-----BEGIN ") {
            throw TLSError.own("OCSP response must be DER, not PEM", detail: file)
        }
        ERR_clear_error()
        var consumed = 0
        let parsed = der.withUnsafeBufferPointer { buffer -> OpaquePointer? in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            let response = d2i_OCSP_RESPONSE(nil, &cursor, buffer.count)
            if let cursor, let base = buffer.baseAddress { consumed = cursor - base }
            return response
        }
        guard let response = parsed else {
            throw TLSError.drainingErrorQueue(
                operation: "parsing OCSP response in \(file)",
                prefix: "not a DER OCSP response: ",
                fallback: "does not parse"
            )
        }
        defer { OCSP_RESPONSE_free(response) }
        ERR_clear_error()
        guard consumed == der.count else {
            throw TLSError.own("not a DER OCSP response: \(der.count - consumed) bytes after it", detail: file)
        }
        let responseStatus = OCSP_response_status(response)
        guard responseStatus == csp_ocsp_response_status_successful() else {
            let name =
                OCSP_response_status_str(Int(responseStatus)).map { String(cString: $0) } ?? "\(responseStatus)"
            throw TLSError.own("OCSP response status is \(name), not successful", detail: file)
        }
        guard let basic = OCSP_response_get1_basic(response) else {
            throw TLSError.drainingErrorQueue(
                operation: "reading OCSP response in \(file)",
                prefix: "OCSP response: ",
                fallback: "no basic response"
            )
        }
        defer { OCSP_BASICRESP_free(basic) }
        var certificateStatus: CertificateStatus?
        if let certificate {
            guard let single = Self.singleResponse(of: basic, for: certificate, issuer: issuer) else {
                throw TLSError.own(
                    "OCSP response is not for certificate \(certificate.displayName)",
                    detail: file
                )
            }
            certificateStatus = try Self.status(of: single, file: file)
        }
        ERR_clear_error()
        return TLSOCSPResponse(path: file, der: der, certificate: certificate, status: certificateStatus)
    }

    /// The status, revocation time and validity window of one single response.
    private static func status(of single: OpaquePointer, file: String) throws -> CertificateStatus {
        ERR_clear_error()
        var reason: Int32 = 0
        var revoked: UnsafeMutablePointer<ASN1_GENERALIZEDTIME>?
        var thisUpdate: UnsafeMutablePointer<ASN1_GENERALIZEDTIME>?
        var nextUpdate: UnsafeMutablePointer<ASN1_GENERALIZEDTIME>?
        let code = OCSP_single_get0_status(single, &reason, &revoked, &thisUpdate, &nextUpdate)
        guard let thisUpdate, let thisUpdateDate = TLSCertificate.date(of: thisUpdate) else {
            throw TLSError.own("OCSP response has no valid thisUpdate time", detail: file)
        }
        var nextUpdateDate: Date?
        if let nextUpdate {
            guard let date = TLSCertificate.date(of: nextUpdate) else {
                throw TLSError.own("OCSP response has an invalid nextUpdate time", detail: file)
            }
            nextUpdateDate = date
        }
        let kind: CertificateStatus.Kind
        switch code {
        case V_OCSP_CERTSTATUS_GOOD:
            kind = .good
        case V_OCSP_CERTSTATUS_REVOKED:
            kind = .revoked(revoked.flatMap { TLSCertificate.date(of: $0) } ?? thisUpdateDate)
        case V_OCSP_CERTSTATUS_UNKNOWN:
            kind = .unknown
        default:
            throw TLSError.drainingErrorQueue(
                operation: "reading OCSP response in \(file)",
                prefix: "OCSP response: ",
                fallback: "no certificate status"
            )
        }
        return CertificateStatus(kind: kind, thisUpdate: thisUpdateDate, nextUpdate: nextUpdateDate)
    }

    /// The single response of `basic` that is about `certificate`, if any (owned by `basic`).
    private static func singleResponse(
        of basic: OpaquePointer,
        for certificate: TLSCertificate,
        issuer: TLSCertificate?
    ) -> OpaquePointer? {
        defer { ERR_clear_error() }
        for index in 0..<OCSP_resp_count(basic) {
            guard let single = OCSP_resp_get0(basic, index),
                let id = OCSP_SINGLERESP_get0_id(single)
            else { continue }
            var digestObject: OpaquePointer?
            var serial: UnsafeMutablePointer<ASN1_INTEGER>?
            guard OCSP_id_get0_info(nil, &digestObject, nil, &serial, id) == 1 else { continue }
            if let issuer {
                // Same digest as the response used, so the IDs compare.
                guard let digest = EVP_get_digestbyname(OBJ_nid2sn(OBJ_obj2nid(digestObject))),
                    let ours = OCSP_cert_to_id(digest, certificate.x509, issuer.x509)
                else { continue }
                defer { OCSP_CERTID_free(ours) }
                if OCSP_id_cmp(ours, id) == 0 { return single }
            } else if let serial, ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(certificate.x509)) == 0 {
                return single
            }
        }
        return nil
    }
}
