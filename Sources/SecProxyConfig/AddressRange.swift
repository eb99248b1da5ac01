/// A range of IP addresses, IPv4 or IPv6, as `proxy_protocol_trusted` lists them: a CIDR block
/// (`"10.0.0.0/8"`, `"2001:db8::/32"`) or a single address (`"192.0.2.7"`, the same as `/32`; `/128` for IPv6).
///
/// `contains` works on raw addresses in network byte order (4 or 16 bytes, as in `sin_addr` / `sin6_addr`),
/// so the data path can test a peer without formatting it. An IPv4 address and its IPv4-mapped IPv6 form
/// (`::ffff:192.0.2.7`, how a dual-stack socket reports IPv4 peers) are the same address: each matches the
/// ranges of the other family's notation. Pure Swift, no NIO and no `inet_pton`.
public struct AddressRange: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable, Hashable {
        case ipv4
        case ipv6
    }

    /// Why a text is not a range; `reason` completes "invalid entry 'TEXT' in 'proxy_protocol_trusted': ".
    public struct ParseError: Error, Sendable, Equatable {
        public var reason: String
    }

    /// The first address of the range, in network byte order: 4 bytes for IPv4, 16 for IPv6; host bits zero.
    public let network: [UInt8]
    /// The number of leading bits that an address must share with `network`: 0...32 or 0...128.
    public let prefixLength: Int

    public var family: Family { network.count == 4 ? .ipv4 : .ipv6 }

    /// `network` and `prefixLength` with host bits cleared (a range whose host bits are set is normalized).
    public init(network: [UInt8], prefixLength: Int) {
        precondition(network.count == 4 || network.count == 16, "an IP address is 4 or 16 bytes")
        precondition((0...network.count * 8).contains(prefixLength), "prefix length out of range")
        self.network = Self.masked(network, prefixLength)
        self.prefixLength = prefixLength
    }

    /// Parses `"ADDRESS"` or `"ADDRESS/PREFIX"`. An address with bits set beyond the prefix
    /// (`"10.1.2.3/8"`) is refused rather than widened in silence: in a list of who may claim any client
    /// address, a typo must not grant more than was written.
    /// - Parameter text: the entry as written.
    public static func parse(_ text: String) -> Result<AddressRange, ParseError> {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let addressText = parts[0]
        let address: [UInt8]
        if let v4 = AddressParser.ipv4(addressText) {
            address = v4
        } else if let v6 = AddressParser.ipv6(addressText) {
            address = v6
        } else if addressText.hasPrefix("[") {
            return .failure(ParseError(reason: "write an IPv6 address without brackets, e.g. \"2001:db8::/32\""))
        } else {
            return .failure(
                ParseError(
                    reason: "'\(addressText)' is not an IPv4 or IPv6 address; expected e.g. \"10.0.0.0/8\", "
                        + "\"2001:db8::/32\" or \"192.0.2.7\""
                )
            )
        }
        let bits = address.count * 8
        guard parts.count == 2 else { return .success(AddressRange(network: address, prefixLength: bits)) }
        let prefixText = parts[1]
        let family = address.count == 4 ? "IPv4" : "IPv6"
        guard !prefixText.isEmpty, prefixText.count <= 3, prefixText.allSatisfy({ $0.isASCII && $0.isNumber }),
            let prefix = Int(prefixText), prefix <= bits, prefixText.count == 1 || prefixText.first != "0"
        else {
            let found = prefixText.isEmpty ? "nothing" : "'\(prefixText)'"
            return .failure(
                ParseError(reason: "the prefix length of an \(family) range must be from 0 to \(bits), found \(found)")
            )
        }
        let range = AddressRange(network: address, prefixLength: prefix)
        guard range.network == address else {
            let single = "\(Self.format(address))/\(bits)"
            return .failure(
                ParseError(
                    reason: "it has bits set after the first \(prefix); write \"\(range)\" for the whole range, "
                        + "or \"\(single)\" for the one address"
                )
            )
        }
        return .success(range)
    }

    /// Whether `address` (4 or 16 bytes, network byte order) is in this range. Addresses of another length
    /// are in no range.
    public func contains<Bytes: Collection>(_ address: Bytes) -> Bool where Bytes.Element == UInt8 {
        switch (address.count, network.count) {
        case (4, 4), (16, 16):
            return Self.sharesPrefix(address, network, prefixLength)
        case (16, 4):
            // ::ffff:a.b.c.d against an IPv4 range.
            guard Self.isIPv4Mapped(address) else { return false }
            return Self.sharesPrefix(address.dropFirst(12), network, prefixLength)
        case (4, 16):
            // a.b.c.d against an IPv6 range written in mapped form (`::ffff:10.0.0.0/104`).
            return Self.sharesPrefix(Self.mappedPrefix + Array(address), network, prefixLength)
        default:
            return false
        }
    }

    /// Whether every address of `other` is in this range (same notation family).
    public func covers(_ other: AddressRange) -> Bool {
        network.count == other.network.count && prefixLength <= other.prefixLength && contains(other.network)
    }

    /// `10.0.0.0/8`, `2001:db8::/32`; a single address without its prefix length.
    public var description: String {
        let address = Self.format(network)
        return prefixLength == network.count * 8 ? address : "\(address)/\(prefixLength)"
    }

    // MARK: - Bits

    /// The 12 bytes before an IPv4 address in its IPv4-mapped IPv6 form.
    private static let mappedPrefix: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]

    private static func isIPv4Mapped<Bytes: Collection>(_ address: Bytes) -> Bool where Bytes.Element == UInt8 {
        address.prefix(12).elementsEqual(mappedPrefix)
    }

    /// `bytes` with every bit after the first `prefix` cleared.
    private static func masked(_ bytes: [UInt8], _ prefix: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let kept = min(max(prefix - index * 8, 0), 8)
            return kept == 8 ? byte : byte & ~(0xff >> kept)
        }
    }

    /// Whether the first `prefix` bits of `address` and `network` are equal (both the same length).
    private static func sharesPrefix<Bytes: Collection>(
        _ address: Bytes,
        _ network: [UInt8],
        _ prefix: Int
    ) -> Bool where Bytes.Element == UInt8 {
        var remaining = prefix
        for (byte, expected) in zip(address, network) {
            if remaining <= 0 { return true }
            let mask: UInt8 = remaining >= 8 ? 0xff : ~(0xff >> remaining)
            if byte & mask != expected & mask { return false }
            remaining -= 8
        }
        return true
    }

    // MARK: - Text

    /// Dotted quad, or RFC 5952 text (lowercase, the longest run of two or more zero groups as `::`).
    static func format(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        let groups = stride(from: 0, to: 16, by: 2).map { UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]) }
        var best: Range<Int>?
        var k = 0
        while k < 8 {
            guard groups[k] == 0 else {
                k += 1
                continue
            }
            var end = k
            while end < 8 && groups[end] == 0 { end += 1 }
            if end - k >= 2, end - k > best?.count ?? 0 { best = k..<end }
            k = end
        }
        func hex(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        guard let best else { return hex(0..<8) }
        return hex(0..<best.lowerBound) + "::" + hex(best.upperBound..<8)
    }
}
