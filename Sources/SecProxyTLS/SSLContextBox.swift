import COpenSSL
import CSecProxyOpenSSL

/// Owns one `SSL_CTX`. Configured once while building a context, read-only afterwards.
final class SSLContextBox: @unchecked Sendable {
    let ctx: OpaquePointer
    /// Objects this context's callbacks reach through unretained pointers (ticket keys, the OCSP
    /// response): kept alive exactly as long as the box, which every connection's context retains.
    private var callbackTargets: [AnyObject] = []

    init(server: Bool) throws {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()) else {
            throw TLSError.drainingErrorQueue(operation: "SSL_CTX_new", fallback: "cannot create SSL_CTX")
        }
        self.ctx = ctx
    }

    deinit {
        SSL_CTX_free(self.ctx)
    }

    /// Keeps `target` alive as long as this context (while building it only).
    func keepAlive(_ target: AnyObject) {
        self.callbackTargets.append(target)
    }

    /// Settings every secproxy context carries, server or client.
    ///
    /// - Parameters:
    ///   - noTickets: set `SSL_OP_NO_TICKET`.
    ///   - cipherList: TLS 1.2 list; "" = `defaultCipherList`.
    ///   - cipherSuites: TLS 1.3 suites; "" = OpenSSL default.
    ///   - groups: "" = OpenSSL default.
    func applyCommonSettings(
        noTickets: Bool,
        minimumVersion: TLSProtocolVersion,
        maximumVersion: TLSProtocolVersion,
        cipherList: String,
        cipherSuites: String,
        groups: String
    ) throws {
        ERR_clear_error()
        csp_ssl_ctx_set_secure_options(self.ctx, noTickets ? 1 : 0)
        _ = csp_ssl_ctx_set_default_modes(self.ctx)

        guard minimumVersion.rank <= maximumVersion.rank else {
            throw TLSError.own(
                "minimum version \(minimumVersion) is above maximum version \(maximumVersion)"
            )
        }
        guard csp_ssl_ctx_set_min_proto_version(self.ctx, minimumVersion.openSSLValue) == 1,
            csp_ssl_ctx_set_max_proto_version(self.ctx, maximumVersion.openSSLValue) == 1
        else {
            throw TLSError.drainingErrorQueue(
                operation: "setting protocol versions",
                prefix: "protocol versions: ",
                fallback: "rejected"
            )
        }

        let list = cipherList.isEmpty ? TLSDefaults.cipherList : cipherList
        guard SSL_CTX_set_cipher_list(self.ctx, list) == 1 else {
            throw TLSError.drainingErrorQueue(
                operation: "SSL_CTX_set_cipher_list(\(list))",
                prefix: "cipher list: ",
                fallback: "rejected"
            )
        }
        if !cipherSuites.isEmpty {
            guard SSL_CTX_set_ciphersuites(self.ctx, cipherSuites) == 1 else {
                throw TLSError.drainingErrorQueue(
                    operation: "SSL_CTX_set_ciphersuites(\(cipherSuites))",
                    prefix: "cipher suites: ",
                    fallback: "rejected"
                )
            }
        }
        if !groups.isEmpty {
            guard csp_ssl_ctx_set1_groups_list(self.ctx, groups) == 1 else {
                throw TLSError.drainingErrorQueue(
                    operation: "SSL_CTX_set1_groups_list(\(groups))",
                    prefix: "groups: ",
                    fallback: "rejected"
                )
            }
        }
    }

    /// Installs a certificate chain (leaf first) and its key, after checking they belong together.
    func useCertificate(chain: [TLSCertificate], key: TLSPrivateKey, origin: String) throws {
        guard let leaf = chain.first else {
            throw TLSError.own("no certificate found", detail: origin)
        }
        guard key.matches(leaf) else {
            throw TLSError.own("private key does not match the certificate", detail: origin)
        }
        ERR_clear_error()
        guard SSL_CTX_use_certificate(self.ctx, leaf.x509) == 1 else {
            throw TLSError.drainingErrorQueue(
                operation: "SSL_CTX_use_certificate(\(origin))",
                prefix: "certificate: ",
                fallback: "rejected"
            )
        }
        for intermediate in chain.dropFirst() {
            guard csp_ssl_ctx_add1_chain_cert(self.ctx, intermediate.x509) == 1 else {
                throw TLSError.drainingErrorQueue(
                    operation: "SSL_CTX_add1_chain_cert(\(origin))",
                    prefix: "certificate chain: ",
                    fallback: "rejected"
                )
            }
        }
        guard SSL_CTX_use_PrivateKey(self.ctx, key.pkey) == 1, SSL_CTX_check_private_key(self.ctx) == 1 else {
            throw TLSError.drainingErrorQueue(
                operation: "SSL_CTX_use_PrivateKey(\(origin))",
                prefix: "private key: ",
                fallback: "rejected"
            )
        }
    }

    /// Verifies servers against `authorities` (the client side: backend TLS): `SSL_VERIFY_PEER`, plus
    /// `FAIL_IF_NO_PEER_CERT` when `required`.
    func verifyPeers(trusting authorities: TLSCertificateAuthorities, required: Bool) throws {
        try self.trust(authorities, namingThemToClients: false)
        self.setVerify(required: required)
    }

    /// Verifies client certificates against `authorities` (whose names go into the CertificateRequest):
    /// `SSL_VERIFY_PEER`, plus `FAIL_IF_NO_PEER_CERT` when `required`.
    func verifyClients(trusting authorities: TLSCertificateAuthorities, required: Bool) throws {
        try self.trust(authorities, namingThemToClients: true)
        self.setVerify(required: required)
    }

    /// Puts the certificates and CRLs of `authorities` in the verification store. They come parsed from the
    /// one read of the bundle, never from the file by path (no `SSL_CTX_load_verify_file`): what is verified
    /// against is exactly what was checked and what the session ID context digested, whatever the file holds
    /// by now.
    /// - Parameter namingThemToClients: also list each in the server's CertificateRequest.
    private func trust(_ authorities: TLSCertificateAuthorities, namingThemToClients: Bool) throws {
        guard let store = SSL_CTX_get_cert_store(self.ctx) else {
            throw TLSError.own("CA file: context has no certificate store")
        }
        for authority in authorities.certificates {
            ERR_clear_error()
            guard X509_STORE_add_cert(store, authority.x509) == 1 else {
                throw TLSError.drainingErrorQueue(
                    operation: "X509_STORE_add_cert",
                    prefix: "CA file: ",
                    fallback: "rejected"
                )
            }
            guard !namingThemToClients || SSL_CTX_add_client_CA(self.ctx, authority.x509) == 1 else {
                throw TLSError.drainingErrorQueue(
                    operation: "SSL_CTX_add_client_CA",
                    prefix: "CA file: ",
                    fallback: "no CA name"
                )
            }
        }
        // CRLs inside the bundle itself, as `SSL_CTX_load_verify_file` would add them; they are only
        // consulted where CRL checks are on (`checkRevocation`).
        try self.addCRLs(authorities.crls.get(), to: store, what: "CA file")
    }

    private func setVerify(required: Bool) {
        var mode = csp_ssl_verify_peer()
        if required {
            mode |= csp_ssl_verify_fail_if_no_peer_cert()
        }
        SSL_CTX_set_verify(self.ctx, mode, nil)
    }

    /// Adds every CRL of `crls` to the verification store and turns on CRL checks of the leaf.
    func checkRevocation(_ crls: TLSCRLFile) throws {
        guard let store = SSL_CTX_get_cert_store(self.ctx) else {
            throw TLSError.own("CRL file: context has no certificate store")
        }
        try self.addCRLs(crls, to: store, what: "CRL file")
        ERR_clear_error()
        guard X509_STORE_set_flags(store, csp_x509_v_flag_crl_check()) == 1 else {
            throw TLSError.drainingErrorQueue(
                operation: "X509_STORE_set_flags(X509_V_FLAG_CRL_CHECK)",
                prefix: "CRL file: ",
                fallback: "rejected"
            )
        }
    }

    private func addCRLs(_ crls: TLSCRLFile, to store: OpaquePointer, what: String) throws {
        for crl in crls.crls {
            ERR_clear_error()
            guard X509_STORE_add_crl(store, crl) == 1 else {
                throw TLSError.drainingErrorQueue(
                    operation: "X509_STORE_add_crl",
                    prefix: "\(what): ",
                    fallback: "rejected"
                )
            }
        }
    }
}
