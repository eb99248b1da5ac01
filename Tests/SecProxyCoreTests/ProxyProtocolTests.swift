import Foundation
import NIOCore
import NIOPosix
import SecProxyTestSupport
import XCTest

@testable import SecProxyCore

/// The PROXY protocol codec (pure) and `ProxyProtocolDecoder` on a real loopback connection.
final class ProxyProtocolTests: XCTestCase {
    // MARK: - Fixtures

    private static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    private func address(_ ip: String, _ port: Int) -> SocketAddress {
        try! SocketAddress(ipAddress: ip, port: port)
    }

    private var tcp4: ProxyProtocolHeader {
        ProxyProtocolHeader(addresses: .inet(source: address("1.2.3.4", 1111), destination: address("5.6.7.8", 2222)))
    }

    private var tcp6: ProxyProtocolHeader {
        ProxyProtocolHeader(
            addresses: .inet(source: address("2001:db8::1", 40000), destination: address("::1", 443))
        )
    }

    private func parse(_ bytes: [UInt8]) -> ProxyProtocolParseResult {
        ProxyProtocolHeader.parse(ByteBuffer(bytes: bytes))
    }

    private func parse(_ text: String) -> ProxyProtocolParseResult {
        parse(Array(text.utf8))
    }

    private func assertInvalid(
        _ result: ProxyProtocolParseResult,
        _ message: String = "",
        file: StaticString = #filePath,
        line: UInt = #line
    ) {
        guard case .invalid = result else {
            XCTFail("expected invalid, got \(result) \(message)", file: file, line: line)
            return
        }
    }

    private func assertRoundTrip(
        _ header: ProxyProtocolHeader,
        v2: Bool,
        expected: ProxyProtocolHeader? = nil,
        file: StaticString = #filePath,
        line: UInt = #line
    ) {
        let encoded = v2 ? header.encodeV2() : header.encodeV1()
        XCTAssertEqual(
            ProxyProtocolHeader.parse(encoded),
            .header(expected ?? header, consumed: encoded.readableBytes),
            file: file,
            line: line
        )
    }

    /// A v2 header with the given version/command and family bytes around `payload`.
    private func v2(versionCommand: UInt8 = 0x21, family: UInt8, length: Int? = nil, payload: [UInt8]) -> [UInt8] {
        let length = length ?? payload.count
        return Self.signature + [versionCommand, family, UInt8(length >> 8), UInt8(length & 0xFF)] + payload
    }

    private let tcp4Block: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 0x04, 0x57, 0x08, 0xAE]  // ports 1111, 2222

    private func tlv(_ type: UInt8, _ value: [UInt8]) -> [UInt8] {
        [type, UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
    }

    // MARK: - v1 encoding

    func testV1EncodesTCP4ByteExact() {
        XCTAssertEqual(String(buffer: tcp4.encodeV1()), "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n")
    }

    func testV1EncodesTCP6ByteExact() {
        XCTAssertEqual(String(buffer: tcp6.encodeV1()), "PROXY TCP6 2001:db8::1 ::1 40000 443\r\n")
    }

    func testV1EncodesUnknown() {
        XCTAssertEqual(String(buffer: ProxyProtocolHeader(addresses: .unknown).encodeV1()), "PROXY UNKNOWN\r\n")
    }

    func testV1EncodesMixedFamiliesAsMappedIPv6() {
        let mixed = ProxyProtocolHeader(
            addresses: .inet(source: address("10.0.0.1", 5000), destination: address("::1", 443))
        )
        XCTAssertEqual(String(buffer: mixed.encodeV1()), "PROXY TCP6 ::ffff:10.0.0.1 ::1 5000 443\r\n")
    }

    func testV1LeavesTLVsOut() {
        var header = tcp4
        header.alpn = "h2"
        header.authority = "example.com"
        header.tls = .init(version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256")
        XCTAssertEqual(String(buffer: header.encodeV1()), "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n")
    }

    // MARK: - v2 encoding

    func testV2EncodesTCP4ByteExact() {
        let bytes = Array(tcp4.encodeV2().readableBytesView)
        XCTAssertEqual(bytes, Self.signature + [0x21, 0x11, 0x00, 0x0C] + tcp4Block)
    }

    func testV2EncodesTCP6WithLengthField() {
        let bytes = Array(tcp6.encodeV2().readableBytesView)
        XCTAssertEqual(Array(bytes[0..<12]), Self.signature)
        XCTAssertEqual(bytes[12], 0x21)
        XCTAssertEqual(bytes[13], 0x21)
        XCTAssertEqual(Int(bytes[14]) << 8 | Int(bytes[15]), 36)
        XCTAssertEqual(bytes.count, 16 + 36)
        XCTAssertEqual(Array(bytes[16..<32]), [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1])
        XCTAssertEqual(Array(bytes[48..<52]), [0x9C, 0x40, 0x01, 0xBB])
    }

    func testV2EncodesUnknownAsUnspecWithoutAddresses() {
        let bytes = Array(ProxyProtocolHeader(addresses: .unknown).encodeV2().readableBytesView)
        XCTAssertEqual(bytes, Self.signature + [0x21, 0x00, 0x00, 0x00])
    }

    func testV2EncodesTLVsByteExact() {
        var header = tcp4
        header.alpn = "h2"
        header.authority = "a.example"
        header.tls = .init(version: "TLSv1.3", cipher: "X", clientCommonName: "bob", clientCertificateVerified: true)
        let ssl: [UInt8] =
            [0x07, 0, 0, 0, 0] + tlv(0x21, Array("TLSv1.3".utf8)) + tlv(0x22, Array("bob".utf8))
            + tlv(0x23, Array("X".utf8))
        let tlvs = tlv(0x01, Array("h2".utf8)) + tlv(0x02, Array("a.example".utf8)) + tlv(0x20, ssl)
        let expected = v2(family: 0x11, payload: tcp4Block + tlvs)
        XCTAssertEqual(Array(header.encodeV2().readableBytesView), expected)
    }

    func testV2EncodesUnverifiedTLSWithoutClientCertificate() {
        var header = tcp4
        header.tls = .init(version: "TLSv1.2", cipher: "ECDHE-ECDSA-AES128-GCM-SHA256")
        let bytes = Array(header.encodeV2().readableBytesView)
        // The SSL TLV follows the 12-byte address block: type, length, client = SSL only, verify = 1.
        XCTAssertEqual(bytes[28], 0x20)
        XCTAssertEqual(Array(bytes[31..<36]), [0x01, 0, 0, 0, 1])
    }

    // MARK: - Round trips

    func testV1RoundTripTCP4() { assertRoundTrip(tcp4, v2: false) }

    func testV1RoundTripTCP6() { assertRoundTrip(tcp6, v2: false) }

    func testV1RoundTripUnknown() { assertRoundTrip(ProxyProtocolHeader(addresses: .unknown), v2: false) }

    func testV2RoundTripTCP4WithTLVs() {
        var header = tcp4
        header.alpn = "http/1.1"
        header.authority = "www.example.com"
        header.tls = .init(version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384")
        assertRoundTrip(header, v2: true)
    }

    func testV2RoundTripTCP6WithVerifiedClientCertificate() {
        var header = tcp6
        header.alpn = "h2"
        header.tls = .init(
            version: "TLSv1.2",
            cipher: "ECDHE-RSA-AES128-GCM-SHA256",
            clientCommonName: "client.example",
            clientCertificateVerified: true
        )
        assertRoundTrip(header, v2: true)
    }

    func testV2RoundTripUnverifiedClientCertificate() {
        var header = tcp4
        header.tls = .init(version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", clientCommonName: "mallory")
        assertRoundTrip(header, v2: true)
    }

    func testV2RoundTripUnspecWithTLVs() {
        let header = ProxyProtocolHeader(
            addresses: .unknown,
            alpn: "h2",
            authority: "example.org",
            tls: .init(version: "TLSv1.3", cipher: "TLS_CHACHA20_POLY1305_SHA256")
        )
        assertRoundTrip(header, v2: true)
    }

    func testV2RoundTripMixedFamiliesBecomesMappedIPv6() {
        let mixed = ProxyProtocolHeader(
            addresses: .inet(source: address("10.0.0.1", 5000), destination: address("::1", 443))
        )
        let expected = ProxyProtocolHeader(
            addresses: .inet(source: address("::ffff:10.0.0.1", 5000), destination: address("::1", 443))
        )
        assertRoundTrip(mixed, v2: true, expected: expected)
        assertRoundTrip(mixed, v2: false, expected: expected)
    }

    func testV2LocalCommandGivesUnknownAddresses() {
        let bytes = v2(versionCommand: 0x20, family: 0x11, payload: tcp4Block + tlv(0x02, Array("x".utf8)))
        XCTAssertEqual(
            parse(bytes),
            .header(ProxyProtocolHeader(addresses: .unknown, authority: "x"), consumed: bytes.count)
        )
        // HAProxy's health checks: LOCAL, UNSPEC, no payload.
        let healthCheck = v2(versionCommand: 0x20, family: 0x00, payload: [])
        XCTAssertEqual(parse(healthCheck), .header(ProxyProtocolHeader(addresses: .unknown), consumed: 16))
    }

    func testV2OtherFamiliesGiveUnknownAddresses() {
        // UDP over IPv4, then AF_UNIX stream: valid headers whose addresses the proxy does not use.
        let udp = v2(family: 0x12, payload: tcp4Block)
        XCTAssertEqual(parse(udp), .header(ProxyProtocolHeader(addresses: .unknown), consumed: udp.count))
        let unix = v2(family: 0x31, payload: [UInt8](repeating: 0, count: 216) + tlv(0x01, Array("h2".utf8)))
        XCTAssertEqual(parse(unix), .header(ProxyProtocolHeader(addresses: .unknown, alpn: "h2"), consumed: unix.count))
    }

    func testV2SkipsUnknownTLVs() {
        let tlvs = tlv(0x04, [0, 0, 0]) + tlv(0xE0, Array("vendor".utf8)) + tlv(0x01, Array("h2".utf8)) + tlv(0x05, [])
        let bytes = v2(family: 0x11, payload: tcp4Block + tlvs)
        var expected = tcp4
        expected.alpn = "h2"
        XCTAssertEqual(parse(bytes), .header(expected, consumed: bytes.count))
    }

    func testV2SSLTLVWithoutSSLClientBitGivesNoTLS() {
        let bytes = v2(family: 0x11, payload: tcp4Block + tlv(0x20, [0x00, 0, 0, 0, 0]))
        XCTAssertEqual(parse(bytes), .header(tcp4, consumed: bytes.count))
    }

    // MARK: - Incremental parsing

    func testEveryProperPrefixNeedsMoreData() {
        var v2Header = tcp6
        v2Header.alpn = "h2"
        v2Header.tls = .init(version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", clientCommonName: "c")
        for encoded in [tcp4.encodeV1(), tcp6.encodeV1(), v2Header.encodeV2()] {
            let bytes = Array(encoded.readableBytesView)
            for count in 0..<bytes.count {
                XCTAssertEqual(parse(Array(bytes[0..<count])), .needMoreData, "prefix of \(count) bytes")
            }
        }
    }

    func testTrailingBytesAreLeftForTheCaller() {
        for encoded in [tcp4.encodeV1(), tcp4.encodeV2()] {
            var buffer = encoded
            buffer.writeString("\u{16}\u{03}\u{01}hello")
            XCTAssertEqual(ProxyProtocolHeader.parse(buffer), .header(tcp4, consumed: encoded.readableBytes))
        }
    }

    func testParseHonoursTheReaderIndex() {
        var buffer = ByteBuffer(string: "xyz")
        var header = tcp4.encodeV1()
        buffer.writeBuffer(&header)
        buffer.moveReaderIndex(forwardBy: 3)
        XCTAssertEqual(ProxyProtocolHeader.parse(buffer), .header(tcp4, consumed: buffer.readableBytes))
    }

    // MARK: - Malformed v1

    func testV1WrongPrefixIsInvalidAtOnce() {
        assertInvalid(parse("GET / HTTP/1.1\r\n"))
        assertInvalid(parse("G"))
        assertInvalid(parse("PROXX"))
        assertInvalid(parse("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"))
        assertInvalid(parse("PROXY\r\n"))
        assertInvalid(parse([0x16, 0x03, 0x01]))  // a TLS ClientHello straight away
    }

    func testV1UnsupportedProtocolIsInvalid() {
        assertInvalid(parse("PROXY TCP5 1.2.3.4 5.6.7.8 1111 2222\r\n"))
        assertInvalid(parse("PROXY UDP4 1.2.3.4 5.6.7.8 1111 2222\r\n"))
        assertInvalid(parse("PROXY  TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n"))
        assertInvalid(parse("PROXY \r\n"))
    }

    func testV1BadIPv4LiteralIsInvalid() {
        for bad in ["1.2.3.256", "1.2.3", "1.2.3.4.5", "01.2.3.4", "localhost", "1.2.3.4%eth0", ""] {
            assertInvalid(parse("PROXY TCP4 \(bad) 5.6.7.8 1111 2222\r\n"), bad)
            assertInvalid(parse("PROXY TCP4 5.6.7.8 \(bad) 1111 2222\r\n"), bad)
        }
    }

    func testV1AddressOfTheWrongFamilyIsInvalid() {
        assertInvalid(parse("PROXY TCP4 ::1 5.6.7.8 1111 2222\r\n"))
        assertInvalid(parse("PROXY TCP4 1.2.3.4 ::ffff:5.6.7.8 1111 2222\r\n"))
        assertInvalid(parse("PROXY TCP6 1.2.3.4 ::1 1111 2222\r\n"))
        assertInvalid(parse("PROXY TCP6 ::1 fe80::1%lo 1111 2222\r\n"))
        assertInvalid(parse("PROXY TCP6 ::1 2001:db8::g 1111 2222\r\n"))
    }

    func testV1PortOutOfRangeOrNotDecimalIsInvalid() {
        for bad in ["65536", "-1", "+80", "99999", "123456", "8a", "0x10", " 80", ""] {
            assertInvalid(parse("PROXY TCP4 1.2.3.4 5.6.7.8 \(bad) 2222\r\n"), bad)
            assertInvalid(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1111 \(bad)\r\n"), bad)
        }
        let edges = ProxyProtocolHeader(
            addresses: .inet(source: address("1.2.3.4", 0), destination: address("5.6.7.8", 65535))
        )
        let line = "PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n"
        XCTAssertEqual(parse(line), .header(edges, consumed: line.utf8.count))
    }

    func testV1MissingCRLFWithin107BytesIsInvalid() {
        let long = "PROXY UNKNOWN " + String(repeating: "x", count: 93)  // 107 bytes, no CRLF
        XCTAssertEqual(long.utf8.count, 107)
        XCTAssertEqual(parse(String(long.dropLast())), .needMoreData)
        assertInvalid(parse(long))
        assertInvalid(parse(long + "\r\n"))
        // CRLF ending exactly at byte 107 is the longest valid line.
        let longest = "PROXY UNKNOWN " + String(repeating: "x", count: 91) + "\r\n"
        XCTAssertEqual(parse(longest), .header(ProxyProtocolHeader(addresses: .unknown), consumed: 107))
    }

    func testV1LineEndingsMustBeCRLF() {
        assertInvalid(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\n"))
        assertInvalid(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\rX"))
    }

    func testV1ExtraOrMissingFieldsAreInvalid() {
        assertInvalid(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222 3333\r\n"))
        assertInvalid(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222 \r\n"))
        assertInvalid(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n"))
        assertInvalid(parse("PROXY TCP4 1.2.3.4  5.6.7.8 1111 2222\r\n"))
        assertInvalid(parse("PROXY TCP4\r\n"))
    }

    func testV1UnknownIgnoresTheRestOfTheLine() {
        let line = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"
        XCTAssertEqual(parse(line), .header(ProxyProtocolHeader(addresses: .unknown), consumed: line.utf8.count))
    }

    // MARK: - Malformed v2

    func testV2BadSignatureIsInvalid() {
        var bytes = v2(family: 0x11, payload: tcp4Block)
        bytes[7] = UInt8(ascii: "q")
        assertInvalid(parse(bytes))
        assertInvalid(parse(Array(bytes[0..<8])), "as soon as the bad byte arrives")
        assertInvalid(parse([0x0D, 0x0A, 0x0D, 0x0A, 0x01]))
    }

    func testV2WrongVersionIsInvalid() {
        assertInvalid(parse(v2(versionCommand: 0x11, family: 0x11, payload: tcp4Block)))
        assertInvalid(parse(v2(versionCommand: 0x31, family: 0x11, payload: tcp4Block)))
        assertInvalid(parse(Self.signature + [0x11]), "as soon as the version byte arrives")
    }

    func testV2UnknownCommandIsInvalid() {
        assertInvalid(parse(v2(versionCommand: 0x22, family: 0x11, payload: tcp4Block)))
        assertInvalid(parse(v2(versionCommand: 0x2F, family: 0x11, payload: tcp4Block)))
    }

    func testV2LengthShorterThanItsFamilyIsInvalid() {
        assertInvalid(parse(v2(family: 0x11, payload: Array(tcp4Block.dropLast()))))
        assertInvalid(parse(v2(family: 0x21, payload: [UInt8](repeating: 0, count: 35))))
        assertInvalid(parse(v2(family: 0x31, payload: [UInt8](repeating: 0, count: 215))))
        // Found from the fixed part alone, without waiting for the payload.
        assertInvalid(parse(v2(family: 0x21, length: 12, payload: [])))
    }

    func testV2TLVOverrunIsInvalid() {
        let overrun = v2(family: 0x11, payload: tcp4Block + [0x01, 0x00, 0x05] + Array("h2".utf8))
        assertInvalid(parse(overrun))
        let truncated = v2(family: 0x11, payload: tcp4Block + tlv(0x01, Array("h2".utf8)) + [0x02, 0x00])
        assertInvalid(parse(truncated))
        let sslTooShort = v2(family: 0x11, payload: tcp4Block + tlv(0x20, [0x01, 0, 0]))
        assertInvalid(parse(sslTooShort))
        let subTLVOverrun = v2(family: 0x11, payload: tcp4Block + tlv(0x20, [0x01, 0, 0, 0, 0, 0x21, 0x00, 0x09, 0x41]))
        assertInvalid(parse(subTLVOverrun))
    }

    func testV2HeaderOver4096BytesIsInvalid() {
        // The length field alone tells: no need to wait for 4 KiB.
        let announced = 4096 - 16 + 1
        let fixedPart = Self.signature + [0x21, 0x11, UInt8(announced >> 8), UInt8(announced & 0xFF)]
        assertInvalid(parse(fixedPart))
        assertInvalid(parse(Self.signature + [0x21, 0x11, 0xFF, 0xFF]))
        // Exactly 4096 is fine.
        let padding = tlv(0x04, [UInt8](repeating: 0, count: 4096 - 16 - 12 - 3))
        let largest = v2(family: 0x11, payload: tcp4Block + padding)
        XCTAssertEqual(largest.count, 4096)
        XCTAssertEqual(parse(largest), .header(tcp4, consumed: 4096))
    }

    // MARK: - Decoder on a loopback connection

    func testDecoderDeliversHeaderThenTrailingBytesIntact() throws {
        try withLoopback { server in
            let client = try server.connect()
            var payload = tcp4.encodeV1()
            let application = Array("\u{16}\u{03}\u{01} application bytes \r\n\0\u{FF}".utf8)
            payload.writeBytes(application)
            try server.send(client, Array(payload.readableBytesView), waitForArrival: false)
            try server.recorder.wait("the application bytes") { $0.data.count >= application.count }
            let seen = server.recorder.snapshot
            XCTAssertEqual(seen.headers, [tcp4])
            XCTAssertEqual(seen.data, application)
            XCTAssertFalse(seen.dataBeforeHeader, "the header event comes before the bytes that followed it")
            XCTAssertTrue(seen.errors.isEmpty)
            XCTAssertTrue(client.isActive)
        }
    }

    func testDecoderAssemblesV1HeaderFromOneByteReads() throws {
        try withLoopback { server in
            let client = try server.connect()
            let header = Array(tcp6.encodeV1().readableBytesView)
            for byte in header.dropLast() {
                try server.send(client, [byte])
                XCTAssertTrue(server.recorder.snapshot.headers.isEmpty)
            }
            try server.send(client, [header.last!] + Array("after".utf8))
            try server.recorder.wait("the application bytes") { $0.data.count >= 5 }
            XCTAssertEqual(server.recorder.snapshot.headers, [tcp6])
            XCTAssertEqual(server.recorder.snapshot.data, Array("after".utf8))
            XCTAssertGreaterThanOrEqual(server.recorder.snapshot.reads, header.count)
        }
    }

    func testDecoderAssemblesV2HeaderFromOneByteReads() throws {
        var expected = tcp4
        expected.alpn = "h2"
        expected.authority = "example.com"
        expected.tls = .init(version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", clientCommonName: "c")
        try withLoopback { server in
            let client = try server.connect()
            for byte in expected.encodeV2().readableBytesView {
                XCTAssertTrue(server.recorder.snapshot.headers.isEmpty)
                try server.send(client, [byte])
            }
            try server.recorder.wait("the header event") { !$0.headers.isEmpty }
            XCTAssertEqual(server.recorder.snapshot.headers, [expected])
            XCTAssertTrue(server.recorder.snapshot.data.isEmpty)
        }
    }

    func testDecoderPassesLaterBytesThroughAfterRemovingItself() throws {
        try withLoopback { server in
            let client = try server.connect()
            try server.send(client, Array(tcp4.encodeV2().readableBytesView))
            try server.recorder.wait("the header event") { !$0.headers.isEmpty }
            try server.send(client, Array("first".utf8))
            try server.send(client, Array("second".utf8))
            try server.recorder.wait("both writes") { $0.data.count >= 11 }
            XCTAssertEqual(server.recorder.snapshot.data, Array("firstsecond".utf8))
            // The decoder left the pipeline right after the header: later reads never go through it.
            XCTAssertEqual(Set(server.recorder.snapshot.decoderPresentAtRead), [false])
            XCTAssertTrue(server.recorder.snapshot.errors.isEmpty)
        }
    }

    func testDecoderClosesOnMalformedHeader() throws {
        try withLoopback { server in
            let client = try server.connect()
            try server.send(client, Array("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\nGET / HTTP/1.0\r\n\r\n".utf8))
            try server.recorder.wait("the server side to close") { $0.closed }
            let seen = server.recorder.snapshot
            XCTAssertEqual(seen.errors.count, 1)
            XCTAssertTrue(seen.errors.first?.reason.contains("1.2.3.256") ?? false, "\(seen.errors)")
            XCTAssertTrue(seen.headers.isEmpty)
            XCTAssertTrue(seen.data.isEmpty, "no byte of a refused connection reaches the application")
            try waitUntil(timeout: 5, "the client to see the close") { !client.isActive }
        }
    }

    func testDecoderClosesOnGarbageWithoutCRLF() throws {
        try withLoopback { server in
            let client = try server.connect()
            // A valid start that never ends: refused once 107 bytes pass, not buffered on.
            try server.send(client, Array(("PROXY " + String(repeating: "A", count: 200)).utf8), waitForArrival: false)
            try server.recorder.wait("the server side to close") { $0.closed }
            XCTAssertEqual(server.recorder.snapshot.errors.count, 1)
            XCTAssertTrue(server.recorder.snapshot.data.isEmpty)
        }
    }

    func testDecoderClosesOnOversizedV2Header() throws {
        try withLoopback { server in
            let client = try server.connect()
            try server.send(client, Self.signature + [0x21, 0x11, 0x20, 0x00])
            try server.recorder.wait("the server side to close") { $0.closed }
            XCTAssertEqual(server.recorder.snapshot.errors.count, 1)
            try waitUntil(timeout: 5, "the client to see the close") { !client.isActive }
        }
    }

    func testDecoderReportsEOFMidHeader() throws {
        try withLoopback { server in
            let client = try server.connect()
            try server.send(client, Array("PROXY TCP4 1.2.3.4 ".utf8))
            try client.close().wait()
            try server.recorder.wait("the server side to close") { $0.closed }
            let seen = server.recorder.snapshot
            XCTAssertEqual(seen.errors.count, 1)
            XCTAssertTrue(seen.errors.first?.reason.contains("ended") ?? false, "\(seen.errors)")
            XCTAssertTrue(seen.headers.isEmpty)
        }
    }

    func testDecoderReportsHalfCloseMidHeader() throws {
        try withLoopback(allowRemoteHalfClosure: true) { server in
            let client = try server.connect()
            try server.send(client, Array(Self.signature[0..<5]))
            try client.close(mode: .output).wait()
            try server.recorder.wait("the server side to close") { $0.closed }
            XCTAssertEqual(server.recorder.snapshot.errors.count, 1)
            try waitUntil(timeout: 5, "the client to see the close") { !client.isActive }
        }
    }

    func testDecoderWorksWithAutoReadOff() throws {
        try withLoopback(autoRead: false) { server in
            let client = try server.connect()
            let header = Array(tcp4.encodeV1().readableBytesView)
            try server.send(client, Array(header[0..<10]))
            try server.send(client, Array(header[10...]) + Array("tail".utf8))
            try server.recorder.wait("the application bytes") { $0.data.count >= 4 }
            XCTAssertEqual(server.recorder.snapshot.headers, [tcp4])
            XCTAssertEqual(server.recorder.snapshot.data, Array("tail".utf8))
        }
    }
}

// MARK: - Loopback harness

extension ProxyProtocolTests {
    /// A server whose child pipeline is `ReadCounter → ProxyProtocolDecoder → Collector`, on 127.0.0.1:0.
    struct LoopbackServer {
        let group: MultiThreadedEventLoopGroup
        let channel: Channel
        let recorder: Recorder

        func connect() throws -> Channel {
            try ClientBootstrap(group: group).connect(to: channel.localAddress!).wait()
        }

        /// Writes `bytes` from the client; by default waits until the server has read them, so that each call is
        /// one read (or more) at the decoder.
        func send(_ client: Channel, _ bytes: [UInt8], waitForArrival: Bool = true) throws {
            let before = recorder.snapshot.rawBytes
            try client.writeAndFlush(ByteBuffer(bytes: bytes)).wait()
            guard waitForArrival else { return }
            try recorder.wait("\(bytes.count) more bytes at the server") { $0.rawBytes >= before + bytes.count }
        }
    }

    private func withLoopback(
        autoRead: Bool = true,
        allowRemoteHalfClosure: Bool = false,
        _ body: (LoopbackServer) throws -> Void
    ) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let recorder = Recorder()
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: autoRead)
            .childChannelOption(.allowRemoteHalfClosure, value: allowRemoteHalfClosure)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandlers(
                        ReadCounter(recorder: recorder),
                        ProxyProtocolDecoder(),
                        Collector(recorder: recorder, readManually: !autoRead)
                    )
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .wait()
        defer { try? channel.close().wait() }
        try body(LoopbackServer(group: group, channel: channel, recorder: recorder))
    }

    /// What the server side saw, guarded by a condition so tests can wait on it without sleeping.
    final class Recorder: @unchecked Sendable {
        struct Seen {
            /// Bytes read from the socket, before the decoder.
            var rawBytes = 0
            /// `channelRead` calls before the decoder.
            var reads = 0
            var headers: [ProxyProtocolHeader] = []
            /// Bytes that passed the decoder.
            var data: [UInt8] = []
            /// For each read after the decoder: whether the decoder was still in the pipeline.
            var decoderPresentAtRead: [Bool] = []
            var dataBeforeHeader = false
            var errors: [ProxyProtocolError] = []
            var otherErrors: [any Error] = []
            var closed = false
        }

        private let condition = NSCondition()
        private var seen = Seen()

        var snapshot: Seen {
            condition.lock()
            defer { condition.unlock() }
            return seen
        }

        func update(_ body: (inout Seen) -> Void) {
            condition.lock()
            body(&seen)
            condition.broadcast()
            condition.unlock()
        }

        func wait(_ description: String, timeout: TimeInterval = 5, until predicate: (Seen) -> Bool) throws {
            let deadline = Deadline(seconds: timeout)
            condition.lock()
            defer { condition.unlock() }
            while !predicate(seen) {
                if !condition.wait(until: deadline.date), !predicate(seen) {
                    throw DeadlineExceeded("timed out after \(timeout)s waiting for: \(description)\nseen: \(seen)")
                }
            }
        }
    }

    /// Counts what the socket delivers, ahead of the decoder.
    final class ReadCounter: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let recorder: Recorder

        init(recorder: Recorder) { self.recorder = recorder }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let count = unwrapInboundIn(data).readableBytes
            recorder.update {
                $0.rawBytes += count
                $0.reads += 1
            }
            context.fireChannelRead(data)
        }
    }

    /// Records what passes the decoder.
    final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let recorder: Recorder
        let readManually: Bool

        init(recorder: Recorder, readManually: Bool) {
            self.recorder = recorder
            self.readManually = readManually
        }

        func channelActive(context: ChannelHandlerContext) {
            if readManually { context.read() }
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(unwrapInboundIn(data).readableBytesView)
            let decoderPresent = (try? context.pipeline.syncOperations.handler(type: ProxyProtocolDecoder.self)) != nil
            recorder.update {
                if $0.headers.isEmpty { $0.dataBeforeHeader = true }
                $0.data += bytes
                $0.decoderPresentAtRead.append(decoderPresent)
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            if readManually { context.read() }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ProxyProtocolEvent.received(let header) = event {
                recorder.update { $0.headers.append(header) }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            recorder.update {
                if let error = error as? ProxyProtocolError {
                    $0.errors.append(error)
                } else {
                    $0.otherErrors.append(error)
                }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            recorder.update { $0.closed = true }
        }
    }
}
