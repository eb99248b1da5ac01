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

// MARK: - Encoding

extension ProxyProtocolHeader {
    /// The addresses as they go on the wire: both IPv4 (4-byte addresses) or both IPv6 (16 bytes), or nil to
    /// send "unknown".
    private var wireAddresses: (source: [UInt8], sourcePort: UInt16, destination: [UInt8], destinationPort: UInt16)? {
        guard case .inet(let source, let destination) = addresses,
            let sourcePort = source.port, let destinationPort = destination.port,
            let sourceBytes = Self.packedAddress(source), let destinationBytes = Self.packedAddress(destination)
        else { return nil }
        let ports = (UInt16(truncatingIfNeeded: sourcePort), UInt16(truncatingIfNeeded: destinationPort))
        if sourceBytes.count == destinationBytes.count {
            return (sourceBytes, ports.0, destinationBytes, ports.1)
        }
        return (Self.ipv6Mapped(sourceBytes), ports.0, Self.ipv6Mapped(destinationBytes), ports.1)
    }

    private static func packedAddress(_ address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4): return withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6): return withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        case .unixDomainSocket: return nil
        }
    }

    private static func ipv6Mapped(_ bytes: [UInt8]) -> [UInt8] {
        bytes.count == 16 ? bytes : [UInt8](repeating: 0, count: 10) + [0xFF, 0xFF] + bytes
    }

    /// Writes the v1 text line: `PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n`, `PROXY TCP6 …`, or `PROXY UNKNOWN\r\n`.
    /// TLVs cannot be carried by v1 and are left out.
    public func encodeV1(into buffer: inout ByteBuffer) {
        guard let wire = wireAddresses,
            let source = try? SocketAddress(packedIPAddress: ByteBuffer(bytes: wire.source), port: 0).ipAddress,
            let destination = try? SocketAddress(packedIPAddress: ByteBuffer(bytes: wire.destination), port: 0)
                .ipAddress
        else {
            buffer.writeString("PROXY UNKNOWN\r\n")
            return
        }
        let proto = wire.source.count == 4 ? "TCP4" : "TCP6"
        buffer.writeString("PROXY \(proto) \(source) \(destination) \(wire.sourcePort) \(wire.destinationPort)\r\n")
    }

    /// The v1 text line in a buffer of its own.
    public func encodeV1() -> ByteBuffer {
        var buffer = ByteBuffer()
        encodeV1(into: &buffer)
        return buffer
    }

    /// Writes the v2 binary header: signature, version 2 with the PROXY command, family TCP over IPv4/IPv6
    /// (UNSPEC for unknown addresses, with no address block), length, addresses, then the TLVs for ALPN,
    /// authority and TLS that are set.
    ///
    /// A TLV that would push the length past 65535 is left out rather than trapping: its values come from the
    /// client (SNI, certificate CN).
    public func encodeV2(into buffer: inout ByteBuffer) {
        buffer.writeBytes(Self.v2Signature)
        buffer.writeInteger(UInt8(0x20 | V2Command.proxy.rawValue))
        let wire = wireAddresses
        switch wire {
        case .some(let wire) where wire.source.count == 4: buffer.writeInteger(V2Family.tcp4)
        case .some: buffer.writeInteger(V2Family.tcp6)
        case .none: buffer.writeInteger(V2Family.unspecified)
        }
        let lengthIndex = buffer.writerIndex
        buffer.writeInteger(UInt16(0))
        let payloadStart = buffer.writerIndex
        if let wire {
            buffer.writeBytes(wire.source)
            buffer.writeBytes(wire.destination)
            buffer.writeInteger(wire.sourcePort)
            buffer.writeInteger(wire.destinationPort)
        }

        func writeTLV(_ type: UInt8, _ value: [UInt8]) {
            let payloadSoFar = buffer.writerIndex - payloadStart
            guard payloadSoFar + 3 + value.count <= Int(UInt16.max) else { return }
            buffer.writeInteger(type)
            buffer.writeInteger(UInt16(value.count))
            buffer.writeBytes(value)
        }
        if let alpn { writeTLV(TLVType.alpn, Array(alpn.utf8)) }
        if let authority { writeTLV(TLVType.authority, Array(authority.utf8)) }
        if let tls { writeTLV(TLVType.ssl, Self.sslValue(tls)) }

        buffer.setInteger(UInt16(buffer.writerIndex - payloadStart), at: lengthIndex)
    }

    /// The v2 binary header in a buffer of its own.
    public func encodeV2() -> ByteBuffer {
        var buffer = ByteBuffer()
        encodeV2(into: &buffer)
        return buffer
    }

    /// The value of a `PP2_TYPE_SSL` TLV: client bits, verify result, then the version, CN and cipher sub-TLVs.
    private static func sslValue(_ tls: TLS) -> [UInt8] {
        var client = SSLClientBits.ssl
        if tls.clientCertificatePresented {
            client |= SSLClientBits.certificateOnConnection | SSLClientBits.certificateInSession
        }
        // The spec: zero only when a certificate was presented and verified, non-zero otherwise.
        let verify: UInt32 = tls.clientCertificateVerified ? 0 : 1
        var value: [UInt8] = [client]
        value += withUnsafeBytes(of: verify.bigEndian) { Array($0) }

        func appendSubTLV(_ type: UInt8, _ string: String) {
            let bytes = Array(string.utf8)
            // The whole SSL TLV must still fit a 16-bit length.
            guard value.count + 3 + bytes.count <= Int(UInt16.max) else { return }
            value.append(type)
            value += withUnsafeBytes(of: UInt16(bytes.count).bigEndian) { Array($0) }
            value += bytes
        }
        if !tls.version.isEmpty { appendSubTLV(TLVType.sslVersion, tls.version) }
        if let commonName = tls.clientCommonName { appendSubTLV(TLVType.sslCommonName, commonName) }
        if !tls.cipher.isEmpty { appendSubTLV(TLVType.sslCipher, tls.cipher) }
        return value
    }
}

// MARK: - Parsing

extension ProxyProtocolHeader {
    /// Parses a header from the start of `buffer`'s readable bytes, telling v1 from v2 by the first byte.
    ///
    /// Call it again with more bytes after `.needMoreData`; it never asks for more than 107 bytes (v1) or
    /// `maximumV2Length` (v2), and says `.invalid` as soon as the bytes so far cannot begin a valid header.
    /// - Parameters:
    ///   - buffer: the bytes received so far; not consumed (see `consumed` in the result).
    public static func parse(_ buffer: ByteBuffer) -> ProxyProtocolParseResult {
        let bytes = buffer.readableBytesView
        guard let first = bytes.first else { return .needMoreData }
        switch first {
        case v1Prefix[0]: return parseV1(bytes)
        case v2Signature[0]: return parseV2(bytes)
        default: return .invalid("not a PROXY protocol header")
        }
    }

    // MARK: v1

    private static func parseV1(_ bytes: ByteBufferView) -> ProxyProtocolParseResult {
        let start = bytes.startIndex
        for (offset, expected) in v1Prefix.enumerated() where offset < bytes.count {
            guard bytes[start + offset] == expected else { return .invalid("not a PROXY protocol header") }
        }
        let searchEnd = min(bytes.count, maximumV1Length)
        var offset = v1Prefix.count
        while offset < searchEnd {
            switch bytes[start + offset] {
            case UInt8(ascii: "\n"):
                guard bytes[start + offset - 1] == UInt8(ascii: "\r") else {
                    return .invalid("PROXY v1 line ends in LF without CR")
                }
                let line = Array(bytes[start..<(start + offset - 1)])
                return parseV1Line(line, consumed: offset + 1)
            case UInt8(ascii: "\r"):
                if offset + 1 < bytes.count, bytes[start + offset + 1] != UInt8(ascii: "\n") {
                    return .invalid("PROXY v1 line has CR without LF")
                }
            default:
                break
            }
            offset += 1
        }
        if bytes.count >= maximumV1Length {
            return .invalid("PROXY v1 line has no CRLF within \(maximumV1Length) bytes")
        }
        return .needMoreData
    }

    /// Parses one v1 line without its CRLF.
    private static func parseV1Line(_ line: [UInt8], consumed: Int) -> ProxyProtocolParseResult {
        let fields = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        // fields[0] is "PROXY", checked with the prefix.
        guard fields.count >= 2 else { return .invalid("PROXY v1 line has no protocol") }
        let family: NIOBSDSocket.ProtocolFamily
        switch fields[1] {
        case "UNKNOWN":
            // The spec: the receiver must ignore whatever follows UNKNOWN up to the CRLF.
            return .header(ProxyProtocolHeader(addresses: .unknown), consumed: consumed)
        case "TCP4": family = .inet
        case "TCP6": family = .inet6
        default: return .invalid("PROXY v1 protocol '\(fields[1])' is not TCP4, TCP6 or UNKNOWN")
        }
        guard fields.count == 6 else {
            return .invalid("PROXY v1 \(fields[1]) line has \(fields.count - 2) address fields, not 4")
        }
        guard let sourcePort = parseV1Port(fields[4]) else { return .invalid("PROXY v1 source port '\(fields[4])'") }
        guard let destinationPort = parseV1Port(fields[5]) else {
            return .invalid("PROXY v1 destination port '\(fields[5])'")
        }
        guard let source = parseV1Address(fields[2], family: family, port: sourcePort) else {
            return .invalid("PROXY v1 source address '\(fields[2])' is not an \(fields[1]) literal")
        }
        guard let destination = parseV1Address(fields[3], family: family, port: destinationPort) else {
            return .invalid("PROXY v1 destination address '\(fields[3])' is not an \(fields[1]) literal")
        }
        return .header(
            ProxyProtocolHeader(addresses: .inet(source: source, destination: destination)),
            consumed: consumed
        )
    }

    /// A decimal port 0–65535: digits only (no sign, no spaces), at most five of them.
    private static func parseV1Port(_ text: String) -> Int? {
        let utf8 = text.utf8
        guard (1...5).contains(utf8.count), utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
            let port = Int(text), port <= Int(UInt16.max)
        else { return nil }
        return port
    }

    /// An address literal of exactly `family` (`inet_pton` rules: dotted quad for IPv4), without a scope suffix.
    private static func parseV1Address(_ text: String, family: NIOBSDSocket.ProtocolFamily, port: Int) -> SocketAddress?
    {
        guard !text.isEmpty, !text.utf8.contains(UInt8(ascii: "%")),
            let address = try? SocketAddress(ipAddress: text, port: port)
        else { return nil }
        switch (address, family) {
        case (.v4, .inet), (.v6, .inet6): return address
        default: return nil
        }
    }

    // MARK: v2

    private static func parseV2(_ bytes: ByteBufferView) -> ProxyProtocolParseResult {
        let start = bytes.startIndex
        for (offset, expected) in v2Signature.enumerated() where offset < bytes.count {
            guard bytes[start + offset] == expected else { return .invalid("bad PROXY v2 signature") }
        }
        if bytes.count > 12 {
            let versionCommand = bytes[start + 12]
            guard versionCommand >> 4 == 2 else {
                return .invalid("PROXY v2 header has version \(versionCommand >> 4), not 2")
            }
            guard V2Command(rawValue: versionCommand & 0x0F) != nil else {
                return .invalid("PROXY v2 header has command \(versionCommand & 0x0F), not LOCAL (0) or PROXY (1)")
            }
        }
        guard bytes.count >= v2FixedLength else { return .needMoreData }

        let command = V2Command(rawValue: bytes[start + 12] & 0x0F)!
        let family = bytes[start + 13]
        let length = Int(bytes[start + 14]) << 8 | Int(bytes[start + 15])
        let total = v2FixedLength + length
        guard total <= maximumV2Length else {
            return .invalid("PROXY v2 header of \(total) bytes is over the \(maximumV2Length)-byte limit")
        }
        let addressLength = v2AddressBlockLength(family: family)
        if command == .proxy, let addressLength, length < addressLength {
            return .invalid(
                "PROXY v2 length \(length) is shorter than the \(addressLength)-byte address block of family "
                    + "0x\(String(family, radix: 16))"
            )
        }
        guard bytes.count >= total else { return .needMoreData }

        let payload = Array(bytes[(start + v2FixedLength)..<(start + total)])
        var header = ProxyProtocolHeader(addresses: .unknown)
        if command == .proxy {
            switch family {
            case V2Family.tcp4: header.addresses = v2Addresses(payload, addressSize: 4)
            case V2Family.tcp6: header.addresses = v2Addresses(payload, addressSize: 16)
            default: break  // UNSPEC, UDP, unix: the receiver keeps the socket's own addresses.
            }
        }
        // TLVs follow the address block; for a family of unknown layout (or a LOCAL header too short for its
        // family) there is nowhere to find them, and they are ignored.
        if let addressLength, length >= addressLength {
            if let problem = parseTLVs(payload[addressLength...], into: &header) { return .invalid(problem) }
        }
        return .header(header, consumed: total)
    }

    private static func v2Addresses(_ payload: [UInt8], addressSize: Int) -> Addresses {
        let portsAt = 2 * addressSize
        let sourcePort = Int(payload[portsAt]) << 8 | Int(payload[portsAt + 1])
        let destinationPort = Int(payload[portsAt + 2]) << 8 | Int(payload[portsAt + 3])
        guard
            let source = try? SocketAddress(
                packedIPAddress: ByteBuffer(bytes: payload[0..<addressSize]),
                port: sourcePort
            ),
            let destination = try? SocketAddress(
                packedIPAddress: ByteBuffer(bytes: payload[addressSize..<portsAt]),
                port: destinationPort
            )
        else { return .unknown }
        return .inet(source: source, destination: destination)
    }

    /// Walks a TLV list: `type(1) length(2, big-endian) value`. Returns a problem when a TLV overruns its
    /// container, nil otherwise; TLVs it does not know are skipped.
    private static func forEachTLV(
        _ bytes: ArraySlice<UInt8>,
        _ body: (UInt8, ArraySlice<UInt8>) -> String?
    ) -> String? {
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            guard bytes.endIndex - offset >= 3 else { return "truncated TLV at the end of the PROXY v2 header" }
            let type = bytes[offset]
            let length = Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
            let valueStart = offset + 3
            guard bytes.endIndex - valueStart >= length else {
                return "PROXY v2 TLV 0x\(String(type, radix: 16)) of \(length) bytes overruns the header"
            }
            if let problem = body(type, bytes[valueStart..<(valueStart + length)]) { return problem }
            offset = valueStart + length
        }
        return nil
    }

    private static func parseTLVs(_ bytes: ArraySlice<UInt8>, into header: inout ProxyProtocolHeader) -> String? {
        forEachTLV(bytes) { type, value in
            switch type {
            case TLVType.alpn: header.alpn = String(decoding: value, as: UTF8.self)
            case TLVType.authority: header.authority = String(decoding: value, as: UTF8.self)
            case TLVType.ssl:
                switch parseSSL(value) {
                case .success(let tls): header.tls = tls
                case .failure(let problem): return problem.reason
                }
            default: break  // CRC32C, NOOP, UNIQUE_ID, NETNS, vendor TLVs: not needed here.
            }
            return nil
        }
    }

    /// A `PP2_TYPE_SSL` value: `client(1) verify(4) sub-TLVs`. nil TLS when the client bit says not TLS.
    private static func parseSSL(_ value: ArraySlice<UInt8>) -> Result<TLS?, ProxyProtocolError> {
        guard value.count >= 5 else {
            return .failure(ProxyProtocolError(reason: "PROXY v2 SSL TLV of \(value.count) bytes is shorter than 5"))
        }
        let client = value[value.startIndex]
        let verify = value[(value.startIndex + 1)..<(value.startIndex + 5)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        var tls = TLS(version: "", cipher: "")
        let problem = forEachTLV(value[(value.startIndex + 5)...]) { type, subValue in
            switch type {
            case TLVType.sslVersion: tls.version = String(decoding: subValue, as: UTF8.self)
            case TLVType.sslCipher: tls.cipher = String(decoding: subValue, as: UTF8.self)
            case TLVType.sslCommonName: tls.clientCommonName = String(decoding: subValue, as: UTF8.self)
            default: break  // signature and key algorithms
            }
            return nil
        }
        if let problem { return .failure(ProxyProtocolError(reason: problem)) }
        let presented = client & (SSLClientBits.certificateOnConnection | SSLClientBits.certificateInSession) != 0
        tls.clientCertificateVerified = presented && verify == 0
        return .success(client & SSLClientBits.ssl != 0 ? tls : nil)
    }
}
