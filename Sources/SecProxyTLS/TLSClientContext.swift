import COpenSSL
import CSecProxyOpenSSL

/// A TLS client context (backend re-encryption, tests): one `SSL_CTX` plus, optionally, the last
/// session per server name for resumption. Immutable after init except for the locked session cache.
public final class TLSClientContext: @unchecked Sendable {
    /// The configuration this context was built from.
    public let configuration: TLSClientConfiguration

    let context: SSLContextBox
    private let sessions: TLSClientSessionCache?

    /// Reads every file `configuration` names (each once) and builds the context from them.
    ///
    /// - Throws: `TLSError` whose reason says what failed.
    public convenience init(configuration: TLSClientConfiguration) throws {
        var files = TLSFileSet(secretPaths: configuration.secretPaths)
        try self.init(configuration: configuration, files: TLSClientFiles(loading: configuration, from: &files))
    }

    /// Builds the context from files already parsed; opens no file. The servers it accepts are those that
    /// verify against `files.trustRoots` as parsed, whatever the file holds by now.
    ///
    /// - Parameter files: the parsed contents of the files `configuration` names
    ///   (`TLSClientFiles(loading:from:)`).
    /// - Throws: `TLSError` whose reason says what failed.
    public init(configuration: TLSClientConfiguration, files: TLSClientFiles) throws {
        self.configuration = configuration
        let box = try SSLContextBox(server: false)
        try box.applyCommonSettings(
            noTickets: false,
            minimumVersion: configuration.minimumVersion,
            maximumVersion: configuration.maximumVersion,
            cipherList: configuration.cipherList,
            cipherSuites: configuration.cipherSuites,
            groups: configuration.groups
        )
        if let trustRoots = files.trustRoots {
            do {
                try box.verifyPeers(trusting: trustRoots, required: true)
            } catch let error as TLSError {
                throw TLSError(
                    reason: "trust roots \(trustRoots.path): \(error.reason)",
                    description: "loading trust roots: \(error.description)"
                )
            }
        } else {
            SSL_CTX_set_verify(box.ctx, csp_ssl_verify_none(), nil)
        }
        if let identity = files.certificate {
            try box.useCertificate(chain: identity.chain, key: identity.key, origin: identity.keyPath)
        }

        if !configuration.alpn.isEmpty {
            var wire: [UInt8] = []
            for proto in configuration.alpn {
                let bytes = Array(proto.utf8)
                guard (1...255).contains(bytes.count) else {
                    throw TLSError.own("ALPN protocol must be 1 to 255 bytes", detail: proto)
                }
                wire.append(UInt8(bytes.count))
                wire.append(contentsOf: bytes)
            }
            ERR_clear_error()
            // Returns 0 on success, unlike almost everything else.
            let rc = wire.withUnsafeBufferPointer { SSL_CTX_set_alpn_protos(box.ctx, $0.baseAddress, UInt32($0.count)) }
            guard rc == 0 else {
                throw TLSError.drainingErrorQueue(
                    operation: "SSL_CTX_set_alpn_protos",
                    prefix: "ALPN: ",
                    fallback: "rejected"
                )
            }
        }

        if configuration.sessionResumption {
            _ = csp_ssl_ctx_set_session_cache_mode_client_external(box.ctx)
            SSL_CTX_sess_set_new_cb(box.ctx, clientNewSessionCallback)
            self.sessions = TLSClientSessionCache()
        } else {
            _ = csp_ssl_ctx_set_session_cache_mode_off(box.ctx)
            self.sessions = nil
        }
        self.context = box
    }

    /// Forgets every cached session.
    public func clearSessionCache() {
        self.sessions?.removeAll()
    }

    func cachedSession(for key: String) -> TLSSessionBox? {
        self.sessions?.get(key)
    }

    func storeSession(_ session: TLSSessionBox, for key: String) {
        self.sessions?.set(session, for: key)
    }
}

/// Called by OpenSSL with a new session (TLS 1.3: after the handshake, when a ticket arrives).
/// Returning 1 keeps the reference OpenSSL handed us.
private func clientNewSessionCallback(ssl: OpaquePointer?, session: OpaquePointer?) -> Int32 {
    guard let ssl, let session, let connection = TLSConnection.from(ssl: ssl),
        case .client(let context, _) = connection.role, let key = connection.sessionCacheKey
    else { return 0 }
    guard SSL_SESSION_is_resumable(session) == 1 else { return 0 }
    context.storeSession(TLSSessionBox(taking: session), for: key)
    return 1
}
