/// The bytes of one file as it was read: plain, or in wiped-on-free storage for a file that holds a secret
/// (a private key, ticket keys, or a certificate file that is also named as a key).
enum TLSFileContents: Sendable {
    case plain([UInt8])
    case secret(TLSSecretBytes)

    var count: Int {
        switch self {
        case .plain(let bytes): bytes.count
        case .secret(let secret): secret.count
        }
    }

    var isEmpty: Bool { self.count == 0 }

    /// Whether the bytes contain `needle` (PEM markers).
    func contains(_ needle: String) -> Bool {
        switch self {
        case .plain(let bytes): FileBytes.contains(bytes, needle)
        case .secret(let secret): secret.contains(needle)
        }
    }

    /// The bytes, in place.
    func withUnsafeBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        switch self {
        case .plain(let bytes): try bytes.withUnsafeBytes(body)
        case .secret(let secret): try secret.withUnsafeBytes(body)
        }
    }

    /// The bytes as an array, for what keeps them after the read: the session ID context digests CA and CRL
    /// files, a stapled OCSP response is sent as it is. A copy only when the file was read as a secret.
    var plainBytes: [UInt8] {
        switch self {
        case .plain(let bytes): bytes
        case .secret(let secret): secret.withUnsafeBytes { Array($0) }
        }
    }

    /// The bytes in wiped-on-free storage, for the parsers of secrets. A copy only when the file was read plain.
    var secretBytes: TLSSecretBytes {
        switch self {
        case .plain(let bytes): TLSSecretBytes(copying: bytes)
        case .secret(let secret): secret
        }
    }
}

/// Runs `body` with a read-only memory BIO over `contents` (in place, no copy), freed afterwards.
func withMemoryBIO<T>(_ contents: TLSFileContents, _ body: (OpaquePointer) throws -> T) throws -> T {
    try contents.withUnsafeBytes { try withMemoryBIO($0, body) }
}
