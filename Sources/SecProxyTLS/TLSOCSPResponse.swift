import COpenSSL
import CSecProxyOpenSSL

/// A DER OCSP response to staple, checked when loaded and immutable afterwards. The status callback
/// hands every handshake that asks for it a copy (OpenSSL frees the copy).
final class TLSOCSPResponse: @unchecked Sendable {
    /// The whole DER `OCSPResponse`, as sent.
    let der: [UInt8]

    private init(der: [UInt8]) {
        self.der = der
    }

    /// Reads and checks a DER OCSP response: it must parse as one `OCSPResponse` with nothing after
    /// it, have status "successful" and carry a basic response. With `certificate`, the response must
    /// also answer for it (the same issuer and serial when `issuer` is known, else the same serial),
    /// which catches the stale file left over from the previous certificate.
    ///
    /// - Throws: `TLSError` whose reason says what is wrong (the file is named by the caller).
    static func load(
        file: String,
        certificate: TLSCertificate? = nil,
        issuer: TLSCertificate? = nil
    ) throws -> TLSOCSPResponse {
        let der = try FileBytes.contents(of: file)
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
        let status = OCSP_response_status(response)
        guard status == csp_ocsp_response_status_successful() else {
            let name = OCSP_response_status_str(Int(status)).map { String(cString: $0) } ?? "\(status)"
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
        if let certificate {
            guard Self.answers(basic, for: certificate, issuer: issuer) else {
                throw TLSError.own(
                    "OCSP response is not for certificate \(certificate.displayName)",
                    detail: file
                )
            }
        }
        ERR_clear_error()
        return TLSOCSPResponse(der: der)
    }

    /// Whether one of the single responses of `basic` is about `certificate`.
    private static func answers(
        _ basic: OpaquePointer,
        for certificate: TLSCertificate,
        issuer: TLSCertificate?
    ) -> Bool {
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
                if OCSP_id_cmp(ours, id) == 0 { return true }
            } else if let serial, ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(certificate.x509)) == 0 {
                return true
            }
        }
        return false
    }
}
