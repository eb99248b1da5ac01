import COpenSSL

/// The CRLs of one PEM file, owned (`X509_CRL_free` on deinit).
///
/// Sendable: immutable after parsing; OpenSSL only reads the CRLs and counts their references atomically
/// when a store takes one.
final class TLSCRLFile: @unchecked Sendable {
    let crls: [OpaquePointer]

    private init(crls: [OpaquePointer]) {
        self.crls = crls
    }

    deinit {
        for crl in self.crls {
            X509_CRL_free(crl)
        }
    }

    /// Parses the bytes of a PEM CRL file (read once by the caller, who may digest the same bytes).
    ///
    /// - Parameter requireOne: false for a file where CRLs are optional (a CA bundle may carry
    ///   them, as `SSL_CTX_load_verify_file` reads both); then non-CRL blocks are skipped.
    static func load(pem bytes: TLSFileContents, origin: String, requireOne: Bool = true) throws -> TLSCRLFile {
        if requireOne {
            guard !bytes.isEmpty else {
                throw TLSError.own("empty file", detail: origin)
            }
            guard bytes.contains("-----BEGIN ") else {
                throw TLSError.own("not PEM", detail: origin)
            }
        } else if !bytes.contains("-----BEGIN X509 CRL-----") {
            return TLSCRLFile(crls: [])
        }
        return try withMemoryBIO(bytes) { bio in
            var crls: [OpaquePointer] = []
            ERR_clear_error()
            while let crl = PEM_read_bio_X509_CRL(bio, nil, nil, nil) {
                crls.append(crl)
            }
            let owner = TLSCRLFile(crls: crls)
            let code = ERR_peek_last_error()
            if ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE {
                ERR_clear_error()
                guard !crls.isEmpty || !requireOne else {
                    throw TLSError.own("no CRL found", detail: origin)
                }
                return owner
            }
            throw TLSError.drainingErrorQueue(operation: "parsing CRL in \(origin)", fallback: "CRL does not parse")
        }
    }
}
