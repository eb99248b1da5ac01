import COpenSSL
import CSecProxyOpenSSL

/// The session ID context of a TLS listener: a SHA-256 digest of everything that decides who may
/// connect to it.
///
/// OpenSSL stores the context in every session it creates (session cache entries, TLS 1.2 tickets,
/// TLS 1.3 PSK tickets) and resumes a session only on an `SSL` whose context is the same. A constant
/// context lets a session taken on a listener without client certificates resume on one that
/// requires them (nginx CVE-2014-3616); a digest of the client-authentication settings refuses it,
/// and refuses sessions from before a reload that changed them. The digest depends on the settings
/// only, never on the machine or the process, so a fleet of identically configured servers sharing
/// `ticket_key_file` keeps resuming across machines.
struct TLSSessionIDContext: Hashable, Sendable, CustomStringConvertible {
    /// How clients authenticate.
    enum ClientAuthentication: String, Sendable {
        /// No `client_ca`: no client certificate is asked for.
        case none
        /// `client_auth = "require"`.
        case require
        /// `client_auth = "optional"`.
        case optional
    }

    /// What the digest covers.
    struct Inputs: Sendable {
        /// The listener's name, so that sessions never cross listeners.
        var listenerName: String
        /// DER of the default certificate (the leaf).
        var defaultCertificateDER: [UInt8]
        /// Bytes of the `client_ca` file, nil without one.
        var clientCA: [UInt8]?
        /// Bytes of the `client_crl` file, nil without one.
        var clientCRL: [UInt8]?
        var clientAuthentication: ClientAuthentication
        /// `allowed_clients` in canonical form; their order does not matter.
        var allowedClients: [String]
    }

    /// `SSL_MAX_SID_CTX_LENGTH` (32) bytes.
    let bytes: [UInt8]

    /// The label that starts every digest; a new encoding gets a new label.
    private static let label = Array("secproxy session id context v1".utf8)

    /// Digests `inputs`. Every field is length-prefixed and absent values are marked, so that no two
    /// different inputs encode to the same bytes.
    ///
    /// - Throws: `TLSError` when OpenSSL cannot compute SHA-256.
    init(_ inputs: Inputs) throws {
        ERR_clear_error()
        guard let context = EVP_MD_CTX_new() else {
            throw TLSError.drainingErrorQueue(operation: "EVP_MD_CTX_new", fallback: "out of memory")
        }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else {
            throw TLSError.drainingErrorQueue(operation: "EVP_DigestInit_ex(SHA-256)", fallback: "no SHA-256")
        }
        var failed = false
        func update(_ bytes: [UInt8]) {
            guard !failed else { return }
            let ok = bytes.withUnsafeBytes { EVP_DigestUpdate(context, $0.baseAddress, $0.count) == 1 }
            if !ok { failed = true }
        }
        func length(_ count: Int) -> [UInt8] {
            withUnsafeBytes(of: UInt64(count).bigEndian) { Array($0) }
        }
        func field(_ name: String, _ value: [UInt8]?) {
            let nameBytes = Array(name.utf8)
            update(length(nameBytes.count) + nameBytes)
            guard let value else {
                update([0])
                return
            }
            update([1] + length(value.count))
            update(value)
        }

        update(length(Self.label.count) + Self.label)
        field("listener", Array(inputs.listenerName.utf8))
        field("default_certificate", inputs.defaultCertificateDER)
        field("client_ca", inputs.clientCA)
        field("client_crl", inputs.clientCRL)
        field("client_auth", Array(inputs.clientAuthentication.rawValue.utf8))
        let allowed = inputs.allowedClients.sorted().map { Array($0.utf8) }
        field("allowed_clients", length(allowed.count) + allowed.flatMap { length($0.count) + $0 })
        guard !failed else {
            throw TLSError.drainingErrorQueue(operation: "EVP_DigestUpdate", fallback: "digest failed")
        }

        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var digestLength: UInt32 = 0
        let finished = digest.withUnsafeMutableBufferPointer {
            EVP_DigestFinal_ex(context, $0.baseAddress, &digestLength) == 1
        }
        guard finished, digestLength > 0 else {
            throw TLSError.drainingErrorQueue(operation: "EVP_DigestFinal_ex", fallback: "digest failed")
        }
        self.bytes = Array(digest.prefix(min(Int(digestLength), Int(SSL_MAX_SID_CTX_LENGTH))))
    }

    /// Installs the context on `ctx`; every `SSL` made from it starts with it.
    func install(on ctx: OpaquePointer) throws {
        ERR_clear_error()
        let rc = self.bytes.withUnsafeBufferPointer {
            SSL_CTX_set_session_id_context(ctx, $0.baseAddress, UInt32($0.count))
        }
        guard rc == 1 else {
            throw TLSError.drainingErrorQueue(operation: "SSL_CTX_set_session_id_context", fallback: "rejected")
        }
    }

    /// Hex, for tests and debug logs (the context is not secret: it travels inside every ticket).
    var description: String {
        self.bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
