import NIOCore

/// Writing PROXY v1/v2 headers for the backend (`proxy_protocol`).
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
