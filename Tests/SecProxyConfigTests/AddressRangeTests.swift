import XCTest

@testable import SecProxyConfig

/// `AddressRange`: the parser behind `proxy_protocol_trusted` and the `contains` the data path calls per
/// connection.
final class AddressRangeTests: XCTestCase {
    private func range(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> AddressRange? {
        switch AddressRange.parse(text) {
        case .success(let range):
            return range
        case .failure(let error):
            XCTFail("'\(text)': \(error.reason)", file: file, line: line)
            return nil
        }
    }

    private func reason(_ text: String) -> String? {
        if case .failure(let error) = AddressRange.parse(text) { return error.reason }
        return nil
    }

    private func v4(_ text: String) -> [UInt8] { AddressParser.ipv4(Substring(text))! }
    private func v6(_ text: String) -> [UInt8] { AddressParser.ipv6(Substring(text))! }

    func testParsesCIDRAndSingleAddressesOfBothFamilies() {
        let ten = range("10.0.0.0/8")
        XCTAssertEqual(ten?.network, [10, 0, 0, 0])
        XCTAssertEqual(ten?.prefixLength, 8)
        XCTAssertEqual(ten?.family, .ipv4)
        XCTAssertEqual(ten?.description, "10.0.0.0/8")

        let single = range("192.0.2.7")
        XCTAssertEqual(single?.prefixLength, 32)
        XCTAssertEqual(single?.description, "192.0.2.7")

        let doc = range("2001:db8::/32")
        XCTAssertEqual(doc?.family, .ipv6)
        XCTAssertEqual(doc?.prefixLength, 32)
        XCTAssertEqual(doc?.description, "2001:db8::/32")
        XCTAssertEqual(range("::1")?.prefixLength, 128)
        XCTAssertEqual(range("0.0.0.0/0")?.description, "0.0.0.0/0")
        XCTAssertEqual(range("::/0")?.description, "::/0")
        XCTAssertEqual(range("2001:DB8:0:0:1:0:0:1")?.description, "2001:db8::1:0:0:1", "RFC 5952: first longest run")
    }

    func testContainsOverRawBytes() {
        let ten = range("10.0.0.0/8")!
        XCTAssertTrue(ten.contains(v4("10.0.0.0")))
        XCTAssertTrue(ten.contains(v4("10.255.255.255")))
        XCTAssertFalse(ten.contains(v4("11.0.0.0")))
        XCTAssertFalse(ten.contains(v4("9.255.255.255")))

        let odd = range("192.168.4.0/22")!
        XCTAssertTrue(odd.contains(v4("192.168.7.255")))
        XCTAssertFalse(odd.contains(v4("192.168.8.0")))
        XCTAssertFalse(odd.contains(v4("192.168.3.255")))

        let one = range("192.0.2.7")!
        XCTAssertTrue(one.contains(v4("192.0.2.7")))
        XCTAssertFalse(one.contains(v4("192.0.2.6")))

        let doc = range("2001:db8::/32")!
        XCTAssertTrue(doc.contains(v6("2001:db8:ffff::1")))
        XCTAssertFalse(doc.contains(v6("2001:db9::1")))
        XCTAssertFalse(doc.contains(v4("32.1.13.184")), "the same bits in another family are another address")

        let nibble = range("2001:db8:8000::/33")!
        XCTAssertTrue(nibble.contains(v6("2001:db8:8000::")))
        XCTAssertFalse(nibble.contains(v6("2001:db8:7fff::")))

        XCTAssertTrue(range("0.0.0.0/0")!.contains(v4("203.0.113.9")))
        XCTAssertFalse(range("0.0.0.0/0")!.contains(v6("2001:db8::1")))
        XCTAssertTrue(range("::/0")!.contains(v6("2001:db8::1")))
        // Any collection of bytes: a slice, an unsafe buffer.
        let packet: [UInt8] = [0xAA] + v4("10.1.2.3") + [0xBB]
        XCTAssertTrue(ten.contains(packet[1..<5]))
        packet.withUnsafeBytes { XCTAssertTrue(ten.contains($0[1..<5])) }
        XCTAssertFalse(ten.contains([10, 1, 2]), "not an address")
        XCTAssertFalse(ten.contains([UInt8]()))
    }

    func testIPv4MappedAddressesMatchIPv4RangesAndTheReverse() {
        let ten = range("10.0.0.0/8")!
        XCTAssertTrue(ten.contains(v6("::ffff:10.1.2.3")), "a dual-stack socket reports IPv4 peers this way")
        XCTAssertFalse(ten.contains(v6("::ffff:11.1.2.3")))
        XCTAssertFalse(ten.contains(v6("::10.1.2.3")), "IPv4-compatible is not IPv4-mapped")
        let mapped = range("::ffff:10.0.0.0/104")!
        XCTAssertTrue(mapped.contains(v4("10.9.9.9")))
        XCTAssertFalse(mapped.contains(v4("11.0.0.1")))
    }

    func testRejectsBadAddressesAndPrefixes() {
        XCTAssertEqual(
            reason("10.0.0.256/8"),
            "'10.0.0.256' is not an IPv4 or IPv6 address; expected e.g. \"10.0.0.0/8\", \"2001:db8::/32\" or \"192.0.2.7\""
        )
        XCTAssertNotNil(reason("example.com"))
        XCTAssertNotNil(reason(""))
        XCTAssertNotNil(reason("fe80::1%eth0"), "no zone IDs")
        XCTAssertEqual(reason("[2001:db8::]/32"), "write an IPv6 address without brackets, e.g. \"2001:db8::/32\"")
        XCTAssertEqual(reason("10.0.0.0/33"), "the prefix length of an IPv4 range must be from 0 to 32, found '33'")
        XCTAssertEqual(reason("2001:db8::/129"), "the prefix length of an IPv6 range must be from 0 to 128, found '129'")
        XCTAssertEqual(reason("10.0.0.0/"), "the prefix length of an IPv4 range must be from 0 to 32, found nothing")
        for bad in ["10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08", "10.0.0.0/8/8", "10.0.0.0/ 8", "10.0.0.0/x"] {
            XCTAssertNotNil(reason(bad), bad)
        }
    }

    func testHostBitsBeyondThePrefixAreAnErrorThatSaysWhatToWrite() {
        XCTAssertEqual(
            reason("10.1.2.3/8"),
            "it has bits set after the first 8; write \"10.0.0.0/8\" for the whole range, or \"10.1.2.3/32\" for the one address"
        )
        XCTAssertEqual(
            reason("2001:db8::1/32"),
            "it has bits set after the first 32; write \"2001:db8::/32\" for the whole range, "
                + "or \"2001:db8::1/128\" for the one address"
        )
        XCTAssertNil(reason("10.1.2.3/32"))
    }

    func testCovers() {
        XCTAssertTrue(range("10.0.0.0/8")!.covers(range("10.1.0.0/16")!))
        XCTAssertTrue(range("10.0.0.0/8")!.covers(range("10.0.0.0/8")!))
        XCTAssertFalse(range("10.1.0.0/16")!.covers(range("10.0.0.0/8")!))
        XCTAssertFalse(range("10.0.0.0/8")!.covers(range("::ffff:10.0.0.0/104")!))
    }

    func testListenerTrustsEveryPeerWhenTheListIsEmpty() throws {
        let result = ConfigurationLoader.load(
            text: """
                [[listener]]
                name = "open"
                listen = "127.0.0.1:1"
                mode = "plain"
                backends = ["127.0.0.1:8080"]

                [[listener]]
                name = "lb"
                listen = "127.0.0.1:2"
                mode = "plain"
                backends = ["127.0.0.1:8080"]
                accept_proxy_protocol = true
                proxy_protocol_trusted = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
                """,
            path: "t.toml",
            directory: "/etc"
        )
        let listeners = try XCTUnwrap(result.configuration?.listeners, "\(result.diagnostics)")
        XCTAssertEqual(result.diagnostics.map(\.message), [])
        XCTAssertTrue(listeners[0].trustsPeer(v4("203.0.113.1")))
        XCTAssertEqual(listeners[1].proxyProtocolTrusted.map(\.description), ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
        XCTAssertTrue(listeners[1].trustsPeer(v4("10.2.3.4")))
        XCTAssertTrue(listeners[1].trustsPeer(v6("::ffff:192.0.2.7")))
        XCTAssertTrue(listeners[1].trustsPeer(v6("2001:db8::42")))
        XCTAssertFalse(listeners[1].trustsPeer(v4("192.0.2.8")))
        XCTAssertFalse(listeners[1].trustsPeer(v6("2001:db9::42")))
    }
}
