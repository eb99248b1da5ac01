import COpenSSL
import CSecProxyOpenSSL

extension SSLContextBox {
    /// Encrypts and decrypts session tickets (TLS 1.2 tickets, TLS 1.3 stateless PSKs) with the keys
    /// of `store` (AES-256-CBC + HMAC-SHA256), instead of OpenSSL's per-context random keys.
    ///
    /// OpenSSL calls the ticket callback of the context a connection started on, but the callback
    /// finds its store through the connection's current context, which SNI may have switched: so
    /// every context of a listener gets the same store.
    func useTicketKeys(_ store: TLSTicketKeyStore) throws {
        // Without the cipher every ticket would fail its handshake: fail the configuration instead.
        guard ticketCipher != nil else {
            throw TLSError.own("session tickets: AES-256-CBC is not available from the OpenSSL providers")
        }
        self.keepAlive(store)
        ERR_clear_error()
        guard SSL_CTX_set_ex_data(self.ctx, ticketKeyStoreExDataIndex, Unmanaged.passUnretained(store).toOpaque()) == 1
        else {
            throw TLSError.drainingErrorQueue(operation: "SSL_CTX_set_ex_data", fallback: "out of memory")
        }
        guard SSL_CTX_set_tlsext_ticket_key_evp_cb(self.ctx, ticketKeyCallback) == 1 else {
            throw TLSError.drainingErrorQueue(
                operation: "SSL_CTX_set_tlsext_ticket_key_evp_cb",
                prefix: "session tickets: ",
                fallback: "rejected"
            )
        }
    }
}

/// Index of the `SSL_CTX` ex-data slot pointing at the context's `TLSTicketKeyStore` (unretained;
/// the `SSLContextBox` keeps the store alive as long as the `SSL_CTX`).
private let ticketKeyStoreExDataIndex: Int32 = {
    let index = csp_ssl_ctx_get_ex_new_index()
    precondition(index >= 0, "SSL_CTX_get_ex_new_index failed")
    return index
}()

/// AES-256-CBC fetched once: `EVP_aes_256_cbc()` makes OpenSSL 3 fetch the implementation by name (a
/// lock and string compares) on every ticket. Lives as long as the process; OpenSSL objects fetched like
/// this are immutable and safe to share between threads. A failed fetch leaves nothing on the error queue.
nonisolated(unsafe) private let ticketCipher: OpaquePointer? = {
    let cipher = EVP_CIPHER_fetch(nil, "AES-256-CBC", nil)
    if cipher == nil { ERR_clear_error() }
    return cipher
}()

/// OpenSSL's ticket key callback (`SSL_CTX_set_tlsext_ticket_key_evp_cb`), on the event loop of
/// the handshake.
///
/// - Encrypting (`encrypt == 1`): writes the current key's name and a random IV, keys the cipher and
///   the HMAC; returns 1.
/// - Decrypting: finds the key by name; unknown → 0 (full handshake); the current key → 1; an older
///   key → 2, so the client gets a new ticket under the current key. TLS 1.3 always gets 2.
/// - Anything failing → -1 (the handshake fails with internal_error).
private func ticketKeyCallback(
    ssl: OpaquePointer?,
    keyName: UnsafeMutablePointer<UInt8>?,
    iv: UnsafeMutablePointer<UInt8>?,
    cipherContext: OpaquePointer?,
    macContext: OpaquePointer?,
    encrypt: Int32
) -> Int32 {
    guard let ssl, let keyName, let iv, let cipherContext, let macContext, let ctx = SSL_get_SSL_CTX(ssl),
        let pointer = SSL_CTX_get_ex_data(ctx, ticketKeyStoreExDataIndex)
    else { return -1 }
    let store = Unmanaged<TLSTicketKeyStore>.fromOpaque(pointer).takeUnretainedValue()
    guard let cipher = ticketCipher else { return -1 }
    let ivLength = EVP_CIPHER_get_iv_length(cipher)
    guard ivLength > 0, ivLength <= EVP_MAX_IV_LENGTH else { return -1 }

    let key: TLSTicketKey
    let result: Int32
    if encrypt == 1 {
        key = store.encryptionKey()
        guard RAND_bytes(iv, ivLength) == 1 else {
            ERR_clear_error()
            return -1
        }
        key.name.withUnsafeBufferPointer { keyName.update(from: $0.baseAddress!, count: $0.count) }
        result = 1
    } else {
        guard let found = store.decryptionKey(named: UnsafeBufferPointer(start: keyName, count: 16)) else {
            return 0
        }
        key = found.key
        // TLS 1.3 clients use a ticket once (OpenSSL's marks the session not resumable), so like
        // OpenSSL's own ticket keys, always send a fresh one.
        result = found.isCurrent && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2
    }
    // The keys are read in place: OpenSSL copies them into the cipher and MAC contexts, which it
    // wipes when it frees them.
    let keyed = key.withKeys { aes, hmac in
        EVP_CipherInit_ex(cipherContext, cipher, nil, aes, iv, encrypt == 1 ? 1 : 0) == 1
            && csp_evp_mac_ctx_set_hmac_sha256_key(macContext, hmac, 32) == 1
    }
    guard keyed else {
        // The handshake fails with internal_error; what failed must not linger for the next call.
        ERR_clear_error()
        return -1
    }
    return result
}
