import COpenSSL
import CSecProxyOpenSSL
import NIOCore

/// One `SSL` and its BIO: the C side of a connection, with results turned into small Swift enums.
/// Confined to the connection's event loop, like the handler that owns it.
final class TLSConnection {
    enum Role {
        case server(TLSServerContext)
        /// The context and the name used for SNI and verification.
        case client(TLSClientContext, serverName: String?)
    }

    enum HandshakeResult {
        case complete
        case incomplete
        case failed(TLSError)
    }

    enum ReadResult {
        case data(ByteBuffer)
        /// Nothing more can be decrypted until more ciphertext arrives.
        case wantRead
        /// The peer sent close_notify.
        case closeNotify
        case failed(TLSError)
    }

    /// The owned `SSL` (which owns the BIO).
    let ssl: OpaquePointer
    /// Keeps the context (and so the callbacks' targets) alive as long as the `SSL`.
    let role: TLSConnection.Role
    private let bio: ByteBufferBIO
    /// Key of the client session cache, if resumption is on.
    let sessionCacheKey: String?
    /// Set by the SNI callback when strict SNI refused the client's name ("" = no SNI).
    var rejectedServerName: String?
    /// Set when a callback (or the end of the handshake) refused the connection for a reason of
    /// ours, e.g. a resumed session without a required client certificate; it is the failure reported.
    var refusal: TLSError?

    /// Plaintext chunk size: one TLS record.
    static let readChunkSize = 16 * 1024

    init(role: TLSConnection.Role, allocator: ByteBufferAllocator) throws {
        let ctx: OpaquePointer
        switch role {
        case .server(let context): ctx = context.defaultContext.ctx
        case .client(let context, _): ctx = context.context.ctx
        }
        ERR_clear_error()
        guard let ssl = SSL_new(ctx) else {
            throw TLSError.drainingErrorQueue(operation: "SSL_new", fallback: "out of memory")
        }
        let bio: ByteBufferBIO
        do {
            bio = try ByteBufferBIO(allocator: allocator)
        } catch {
            SSL_free(ssl)
            throw error
        }
        SSL_set_bio(ssl, bio.bio, bio.bio)  // the SSL takes the BIO's only reference
        self.ssl = ssl
        self.bio = bio
        self.role = role

        switch role {
        case .server:
            self.sessionCacheKey = nil
        case .client(let context, let serverName):
            self.sessionCacheKey = context.configuration.sessionResumption ? (serverName ?? "") : nil
        }
        guard SSL_set_ex_data(ssl, connectionExDataIndex, Unmanaged.passUnretained(self).toOpaque()) == 1 else {
            throw TLSError.drainingErrorQueue(operation: "SSL_set_ex_data", fallback: "out of memory")
        }

        switch role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client(let context, let serverName):
            try self.configureClient(context: context, serverName: serverName)
            SSL_set_connect_state(ssl)
        }
    }

    deinit {
        // Frees the BIO too; `self.bio` is released only after this body, so the BIO's destroy
        // callback never sees a dangling owner.
        SSL_free(self.ssl)
    }

    /// The connection an `SSL` belongs to (inside OpenSSL callbacks).
    static func from(ssl: OpaquePointer) -> TLSConnection? {
        guard let data = SSL_get_ex_data(ssl, connectionExDataIndex) else { return nil }
        return Unmanaged<TLSConnection>.fromOpaque(data).takeUnretainedValue()
    }

    private func configureClient(context: TLSClientContext, serverName: String?) throws {
        ERR_clear_error()
        if let name = serverName, !name.isEmpty {
            let isIPAddress = Self.isIPAddress(name)
            if !isIPAddress {
                guard csp_ssl_set_tlsext_host_name(self.ssl, name) == 1 else {
                    throw TLSError.drainingErrorQueue(
                        operation: "SSL_set_tlsext_host_name",
                        fallback: "bad server name"
                    )
                }
            }
            if context.configuration.trustRootsFile != nil {
                if isIPAddress {
                    guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(self.ssl), name) == 1 else {
                        throw TLSError.drainingErrorQueue(
                            operation: "X509_VERIFY_PARAM_set1_ip_asc",
                            fallback: "bad IP address"
                        )
                    }
                } else {
                    SSL_set_hostflags(self.ssl, csp_x509_check_flag_no_partial_wildcards())
                    guard SSL_set1_host(self.ssl, name) == 1 else {
                        throw TLSError.drainingErrorQueue(operation: "SSL_set1_host", fallback: "bad host name")
                    }
                }
            }
        }
        if let key = self.sessionCacheKey, let session = context.cachedSession(for: key) {
            // Best effort: a session that cannot be used just means a full handshake.
            if SSL_set_session(self.ssl, session.session) != 1 {
                ERR_clear_error()
            }
        }
    }

    private static func isIPAddress(_ name: String) -> Bool {
        name.contains(":") || (!name.isEmpty && name.allSatisfy { $0 == "." || $0.isASCII && $0.isNumber })
    }

    // MARK: - Transport

    func receive(_ ciphertext: ByteBuffer) {
        self.bio.receive(ciphertext)
    }

    func takeOutbound() -> ByteBuffer? {
        self.bio.takeOutbound()
    }

    func discardInbound() {
        self.bio.discardInbound()
    }

    /// Whether `read` could make progress without new ciphertext.
    var canRead: Bool {
        self.bio.inboundByteCount > 0 || SSL_pending(self.ssl) > 0
    }

    // MARK: - SSL calls

    func doHandshake() -> HandshakeResult {
        ERR_clear_error()
        let rc = SSL_do_handshake(self.ssl)
        if rc == 1 {
            // The SNI callback refuses such a session before the ServerHello; this catches any path
            // where OpenSSL resumed without calling it.
            if case .server(let context) = self.role, let refusal = context.resumptionRefusal(self.ssl) {
                self.refusal = refusal
                return .failed(refusal)
            }
            self.keepRenewedTLS12Session()
            return .complete
        }
        let error = SSL_get_error(self.ssl, rc)
        switch error {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .incomplete
        default:
            return .failed(self.failure(code: error, operation: "handshake"))
        }
    }

    /// TLS 1.2 client: a resumed handshake in which the server renewed the ticket (e.g. after a ticket
    /// key rotation) leaves the old session not resumable, and OpenSSL reports new sessions of full
    /// handshakes only; so the renewed session is kept here.
    private func keepRenewedTLS12Session() {
        guard case .client(let context, _) = self.role, let key = self.sessionCacheKey,
            SSL_session_reused(self.ssl) == 1, SSL_version(self.ssl) != TLS1_3_VERSION,
            let session = SSL_get_session(self.ssl), SSL_SESSION_is_resumable(session) == 1,
            context.cachedSession(for: key)?.session != session
        else { return }
        SSL_SESSION_up_ref(session)
        context.storeSession(TLSSessionBox(taking: session), for: key)
    }

    /// Decrypts at most one record into a new buffer.
    func read(allocator: ByteBufferAllocator) -> ReadResult {
        var buffer = allocator.buffer(capacity: Self.readChunkSize)
        var rc: Int32 = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.readChunkSize) { destination in
            ERR_clear_error()
            rc = SSL_read(self.ssl, destination.baseAddress, Int32(min(destination.count, Self.readChunkSize)))
            return rc > 0 ? Int(rc) : 0
        }
        if rc > 0 {
            return .data(buffer)
        }
        let error = SSL_get_error(self.ssl, rc)
        switch error {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wantRead
        case SSL_ERROR_ZERO_RETURN:
            ERR_clear_error()
            return .closeNotify
        default:
            return .failed(self.failure(code: error, operation: "read"))
        }
    }

    /// Encrypts all of `plaintext` into the outbound buffer.
    func write(_ plaintext: ByteBuffer) -> TLSError? {
        let count = plaintext.readableBytes
        guard count > 0 else { return nil }
        // Ciphertext is ~plaintext + 22 bytes per 16 KiB record (TLS 1.3 AEAD); reserve it once.
        self.bio.reserveOutbound(count + (count / Self.readChunkSize + 1) * 64)
        return plaintext.withUnsafeReadableBytes { source -> TLSError? in
            var offset = 0
            while offset < source.count {
                let chunk = min(source.count - offset, 1 << 30)
                ERR_clear_error()
                let rc = SSL_write(self.ssl, source.baseAddress! + offset, Int32(chunk))
                if rc <= 0 {
                    // WANT_WRITE cannot happen with this BIO (writes always succeed).
                    return self.failure(code: SSL_get_error(self.ssl, rc), operation: "write")
                }
                offset += Int(rc)
            }
            return nil
        }
    }

    /// Queues close_notify. Best effort: failures are cleared, not reported.
    func shutdown() {
        ERR_clear_error()
        let rc = SSL_shutdown(self.ssl)
        if rc < 0 {
            ERR_clear_error()
        }
    }

    private func failure(code: Int32, operation: String) -> TLSError {
        if let refusal = self.refusal {
            ERR_clear_error()
            return refusal
        }
        if let rejected = self.rejectedServerName {
            ERR_clear_error()
            let shown = rejected.isEmpty ? "no SNI" : "SNI \(rejected)"
            return TLSError(reason: "unrecognized name", description: "\(operation): unrecognized name (\(shown))")
        }
        switch code {
        case SSL_ERROR_SSL:
            var error = TLSError.drainingErrorQueue(operation: operation, fallback: "protocol error")
            let verify = SSL_get_verify_result(self.ssl)
            if verify != X509_V_OK {
                error.description +=
                    " (certificate verification: \(String(cString: X509_verify_cert_error_string(verify))))"
            }
            return error
        case SSL_ERROR_SYSCALL:
            return TLSError.drainingErrorQueue(operation: operation, fallback: "unexpected eof while reading")
        case SSL_ERROR_ZERO_RETURN:
            ERR_clear_error()
            return TLSError(
                reason: "handshake eof",
                description: "\(operation): peer sent close_notify during the handshake"
            )
        default:
            return TLSError.drainingErrorQueue(operation: operation, fallback: "SSL error \(code)")
        }
    }

    // MARK: - Session facts

    func sessionInfo() -> TLSSessionInfo {
        let version = String(cString: SSL_get_version(self.ssl))
        let cipher =
            SSL_get_current_cipher(self.ssl).flatMap { SSL_CIPHER_get_name($0) }.map { String(cString: $0) } ?? ""
        let serverName = SSL_get_servername(self.ssl, csp_tlsext_nametype_host_name()).map { String(cString: $0) }
        var alpnPointer: UnsafePointer<UInt8>?
        var alpnLength: UInt32 = 0
        SSL_get0_alpn_selected(self.ssl, &alpnPointer, &alpnLength)
        let alpn = alpnPointer.flatMap { pointer -> String? in
            alpnLength > 0
                ? String(decoding: UnsafeBufferPointer(start: pointer, count: Int(alpnLength)), as: UTF8.self) : nil
        }
        // The session's peer certificate: for a resumed session, the one verified when the session
        // was established (it travels inside the ticket), so `allowed_clients` is checked on it.
        let peer = SSL_get1_peer_certificate(self.ssl).map { TLSCertificate(taking: $0).peerInfo }
        ERR_clear_error()
        return TLSSessionInfo(
            version: version,
            cipher: cipher,
            serverName: serverName,
            alpn: alpn,
            resumed: SSL_session_reused(self.ssl) == 1,
            peerCertificate: peer
        )
    }
}

/// Index of the `SSL` ex-data slot pointing back at the `TLSConnection`.
private let connectionExDataIndex: Int32 = {
    let index = csp_ssl_get_ex_new_index()
    precondition(index >= 0, "SSL_get_ex_new_index failed")
    return index
}()
