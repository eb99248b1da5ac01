import NIOCore

/// One HAProxy PROXY protocol header (v1 text or v2 binary): the real client and server addresses of a
/// connection that passed through a layer-4 proxy, plus the v2 TLVs secproxy sends and reads (ALPN, SNI, TLS).
///
/// This is a pure value with its codec: `encodeV1`/`encodeV2` write what secproxy sends to a backend
/// (`proxy_protocol = "v1" | "v2"`), `parse` reads what a balancer in front sends (`accept_proxy_protocol`).
/// Parsing is strict where SPEC §3 says a header is malformed, and lenient (skip, don't fail) on v2 TLVs
/// it does not know.
public struct ProxyProtocolHeader: Sendable, Equatable {
    /// The addresses a header carries.
    public enum Addresses: Sendable, Equatable {
        /// A TCP connection: both addresses are `.v4` or both `.v6`, each with its port.
        ///
        /// When encoding, a `.v4`/`.v6` mix is sent as IPv6 with the IPv4 side IPv4-mapped (`::ffff:a.b.c.d`),
        /// as HAProxy does; a unix-domain address is sent as unknown.
        case inet(source: SocketAddress, destination: SocketAddress)
        /// No usable addresses: v1 `UNKNOWN`, a v2 `LOCAL` command, or a v2 family other than TCP over IPv4/IPv6.
        /// The receiver then uses the real socket addresses.
        case unknown
    }

    /// TLS facts of the client connection (v2 TLV `PP2_TYPE_SSL`, 0x20).
    public struct TLS: Sendable, Equatable {
        /// The protocol version as OpenSSL names it (`TLSv1.3`); sub-TLV 0x21. Empty when not sent.
        public var version: String
        /// The negotiated cipher as OpenSSL names it (`TLS_AES_128_GCM_SHA256`); sub-TLV 0x23. Empty when not sent.
        public var cipher: String
        /// The client certificate's subject common name, when one was presented; sub-TLV 0x22.
        public var clientCommonName: String?
        /// True when the client presented a certificate and it verified (the TLV's `verify` field is 0).
        public var clientCertificateVerified: Bool

        public init(
            version: String,
            cipher: String,
            clientCommonName: String? = nil,
            clientCertificateVerified: Bool = false
        ) {
            self.version = version
            self.cipher = cipher
            self.clientCommonName = clientCommonName
            self.clientCertificateVerified = clientCertificateVerified
        }

        /// A client certificate was presented: what the `PP2_CLIENT_CERT_*` bits say.
        var clientCertificatePresented: Bool { clientCommonName != nil || clientCertificateVerified }
    }

    /// The client (source) and proxy-facing (destination) addresses.
    public var addresses: Addresses
    /// The negotiated ALPN protocol (v2 TLV `PP2_TYPE_ALPN`, 0x01); v1 cannot carry it.
    public var alpn: String?
    /// The SNI host name the client asked for (v2 TLV `PP2_TYPE_AUTHORITY`, 0x02); v1 cannot carry it.
    public var authority: String?
    /// TLS facts, when the client connection was TLS (v2 TLV `PP2_TYPE_SSL`, 0x20); v1 cannot carry them.
    public var tls: TLS?

    public init(addresses: Addresses, alpn: String? = nil, authority: String? = nil, tls: TLS? = nil) {
        self.addresses = addresses
        self.alpn = alpn
        self.authority = authority
        self.tls = tls
    }
}

/// What `ProxyProtocolHeader.parse` made of the bytes received so far.
public enum ProxyProtocolParseResult: Sendable, Equatable {
    /// The bytes are a valid beginning of a header; read more and parse again from the start.
    case needMoreData
    /// A complete header, which took the first `consumed` bytes; later bytes belong to the application.
    case header(ProxyProtocolHeader, consumed: Int)
    /// Not a valid PROXY header (SPEC §3: the connection is closed); the reason is for the log.
    case invalid(String)
}

// MARK: - Wire constants

extension ProxyProtocolHeader {
    /// The longest v1 line, CRLF included (the spec's worst case, `PROXY UNKNOWN` + two full IPv6 literals).
    public static let maximumV1Length = 107
    /// The longest v2 header secproxy accepts. The format allows 16 + 65535 bytes; no real balancer sends more
    /// than a few hundred, and the cap bounds what one connection can make the proxy buffer.
    public static let maximumV2Length = 4096

    /// The 12 bytes every v2 header starts with: `\r\n\r\n\0\r\nQUIT\n`.
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// Signature, version/command, family, length.
    static let v2FixedLength = 16
    static let v1Prefix: [UInt8] = Array("PROXY ".utf8)

    enum V2Command: UInt8 {
        case local = 0x0
        case proxy = 0x1
    }

    enum V2Family {
        static let unspecified: UInt8 = 0x00
        static let tcp4: UInt8 = 0x11
        static let tcp6: UInt8 = 0x21
    }

    enum TLVType {
        static let alpn: UInt8 = 0x01
        static let authority: UInt8 = 0x02
        static let ssl: UInt8 = 0x20
        static let sslVersion: UInt8 = 0x21
        static let sslCommonName: UInt8 = 0x22
        static let sslCipher: UInt8 = 0x23
    }

    enum SSLClientBits {
        static let ssl: UInt8 = 0x01
        static let certificateOnConnection: UInt8 = 0x02
        static let certificateInSession: UInt8 = 0x04
    }

    /// The size of the address block a v2 address family (high nibble of the family byte) takes, or nil for a
    /// family the spec does not define (its layout, and so where TLVs start, is unknown).
    static func v2AddressBlockLength(family: UInt8) -> Int? {
        switch family >> 4 {
        case 0x0: return 0  // AF_UNSPEC
        case 0x1: return 12  // AF_INET: 4 + 4 + 2 + 2
        case 0x2: return 36  // AF_INET6: 16 + 16 + 2 + 2
        case 0x3: return 216  // AF_UNIX: 108 + 108
        default: return nil
        }
    }
}
