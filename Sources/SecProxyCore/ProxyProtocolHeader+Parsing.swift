import NIOCore

/// Reading PROXY v1/v2 headers from the client (`accept_proxy_protocol`).
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
