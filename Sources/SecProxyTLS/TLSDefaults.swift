/// Defaults shared by every context.
enum TLSDefaults {
    /// TLS 1.2: ECDHE key exchange with AEAD ciphers only.
    static let cipherList = "ECDHE+AESGCM:ECDHE+CHACHA20"
    /// Fixed session id context, so server-side session cache resumption (with client verification) works.
    static let sessionIDContext: [UInt8] = Array("secproxy".utf8)
    /// Server session cache entries per context.
    static let sessionCacheSize = 20 * 1024
    /// Random session ticket keys: a new current key this often; the previous one still decrypts.
    static let ticketKeyRotationInterval: Duration = .seconds(3600)
}
