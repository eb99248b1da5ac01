import COpenSSL

/// The CRLs of one PEM file, owned (`X509_CRL_free` on deinit).
final class TLSCRLFile {
    let crls: [OpaquePointer]

    private init(crls: [OpaquePointer]) {
        self.crls = crls
    }

    deinit {
        for crl in self.crls {
            X509_CRL_free(crl)
        }
    }

    static func load(file: String) throws -> TLSCRLFile {
        let bytes = try FileBytes.contents(of: file)
        guard !bytes.isEmpty else {
            throw TLSError.own("empty file", detail: file)
        }
        guard FileBytes.contains(bytes, "-----BEGIN ") else {
            throw TLSError.own("not PEM", detail: file)
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
                guard !crls.isEmpty else {
                    throw TLSError.own("no CRL found", detail: file)
                }
                return owner
            }
            throw TLSError.drainingErrorQueue(operation: "parsing CRL in \(file)", fallback: "CRL does not parse")
        }
    }
}
