/// Defaults shared by every context.
enum TLSDefaults {
    /// TLS 1.2: ECDHE key exchange with AEAD ciphers only.
    static let cipherList = "ECDHE+AESGCM:ECDHE+CHACHA20"
    /// Fixed session id context, so server-side session cache resumption (with client verification) works.
    static let sessionIDContext: [UInt8] = Array("secproxy".utf8)
    /// TLS 1.3 tickets sent after a handshake (OpenSSL's default is 2). A client resumes one connection
    /// with one ticket and gets a fresh one each time; each ticket costs an AES and an HMAC operation.
    static let ticketsPerHandshake = 1
    /// Server session cache entries per context.
    static let sessionCacheSize = 20 * 1024
    /// Random session ticket keys: a new current key this often; the previous one still decrypts.
    static let ticketKeyRotationInterval: Duration = .seconds(3600)
}
