import COpenSSL
import CSecProxyOpenSSL

/// A private key; owns its `EVP_PKEY`.
public final class TLSPrivateKey: @unchecked Sendable {
    /// The owned `EVP_PKEY` (one reference).
    let pkey: OpaquePointer

    init(taking pkey: OpaquePointer) {
        self.pkey = pkey
    }

    deinit {
        EVP_PKEY_free(self.pkey)
    }

    /// Loads a PEM private key (PKCS#8, traditional RSA or EC).
    ///
    /// The file's bytes are read into `TLSSecretBytes` and parsed in place, so our one copy of the
    /// key's PEM text is wiped as soon as the key is parsed; the `EVP_PKEY` wipes its key when freed.
    ///
    /// - Parameter file: path of the PEM file.
    /// - Throws: `TLSError` when the file cannot be read, is empty, not PEM, encrypted
    ///   ("encrypted private keys are not supported") or does not parse.
    public static func load(file: String) throws -> TLSPrivateKey {
        var files = TLSFileSet()
        return try files.privateKey(file).get()
    }

    /// Parses a PEM private key from the `bytes` of the file `origin`, in place (the caller wipes them by
    /// releasing them).
    static func load(pem bytes: TLSFileContents, origin: String) throws -> TLSPrivateKey {
        guard !bytes.isEmpty else {
            throw TLSError.own("empty file", detail: origin)
        }
        guard bytes.contains("-----BEGIN ") else {
            throw TLSError.own("not PEM", detail: origin)
        }
        if bytes.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || bytes.contains("Proc-Type: 4,ENCRYPTED") {
            throw TLSError.own("encrypted private keys are not supported", detail: origin)
        }
        // "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----".
        guard bytes.contains("PRIVATE KEY-----") else {
            throw TLSError.own("no private key found", detail: origin)
        }
        return try withMemoryBIO(bytes) { bio in
            ERR_clear_error()
            // A password callback that refuses, so OpenSSL never prompts on the terminal.
            guard let pkey = PEM_read_bio_PrivateKey(bio, nil, { _, _, _, _ in -1 }, nil) else {
                let code = ERR_peek_last_error()
                if ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE {
                    throw TLSError.own("no private key found", detail: origin)
                }
                throw TLSError.drainingErrorQueue(
                    operation: "parsing private key in \(origin)",
                    fallback: "private key does not parse"
                )
            }
            ERR_clear_error()
            return TLSPrivateKey(taking: pkey)
        }
    }

    /// Whether this key belongs to `certificate` (`X509_check_private_key`).
    public func matches(_ certificate: TLSCertificate) -> Bool {
        ERR_clear_error()
        let result = X509_check_private_key(certificate.x509, self.pkey) == 1
        ERR_clear_error()
        return result
    }
}
