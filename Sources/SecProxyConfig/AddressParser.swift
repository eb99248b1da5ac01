/// Parsers for the address forms a configuration may write: listening addresses, backends, IP literals,
/// DNS names. Pure Swift (no `inet_pton`), so the rules are the same on every platform.
///
/// Each parser returns a `Result` whose failure is the reason a user reads after
/// `invalid address 'TEXT' for 'listen': `.
enum AddressParser {
    /// Why an address was rejected; `reason` completes a sentence about the address.
    struct Problem: Error, Equatable {
        var reason: String
    }

    /// A concrete IP address, used to tell whether two listening addresses overlap.
    enum IPAddress: Hashable {
        case v4([UInt8])
        case v6([UInt8])

        /// `0.0.0.0` or `::`.
        var isUnspecified: Bool {
            switch self {
            case .v4(let bytes), .v6(let bytes): bytes.allSatisfy { $0 == 0 }
            }
        }
    }

    /// Parses a listening address: `IPV4:PORT`, `localhost:PORT` or `[IPV6]:PORT`, port 0...65535
    /// (0 = an ephemeral port chosen by the kernel).
    /// - Parameter text: the address as written; kept verbatim in the result.
    static func listenAddress(_ text: String) -> Result<SocketAddressSpec, Problem> {
        let example = "e.g. \"0.0.0.0:8443\" or \"[::]:8443\""
        let split: (host: Substring, port: Substring, bracketed: Bool)
        switch splitHostPort(text, example: example) {
        case .success(let parts): split = parts
        case .failure(let problem): return .failure(problem)
        }
        if split.host.isEmpty {
            return .failure(Problem(reason: "missing host; use \"0.0.0.0:PORT\" or \"[::]:PORT\" for every address"))
        }
        let host = String(split.host)
        if split.bracketed {
            guard ipv6(split.host) != nil else {
                return .failure(Problem(reason: "'\(host)' is not a valid IPv6 address"))
            }
        } else if host.lowercased() != "localhost" {
            if looksLikeIPv4(split.host) {
                guard ipv4(split.host) != nil else {
                    return .failure(Problem(reason: "'\(host)' is not a valid IPv4 address"))
                }
            } else {
                return .failure(
                    Problem(reason: "the host must be an IPv4 address, [IPv6 address] or localhost, found '\(host)'")
                )
            }
        }
        switch port(split.port, allowZero: true) {
        case .success(let port): return .success(SocketAddressSpec(host: host, port: port, text: text))
        case .failure(let problem): return .failure(problem)
        }
    }

    /// Parses a backend: `HOST:PORT` (IPv4 literal or DNS name), `[IPV6]:PORT` (port 1...65535), or
    /// `unix:/path`, a relative path being resolved against `directory`.
    /// - Parameters:
    ///   - text: the backend as written; kept verbatim in the result.
    ///   - directory: the configuration's folder.
    static func backend(_ text: String, directory: String) -> Result<BackendAddress, Problem> {
        if text.hasPrefix("unix:") {
            let written = String(text.dropFirst("unix:".count))
            guard !written.isEmpty else {
                return .failure(Problem(reason: "missing socket path after 'unix:'"))
            }
            let path = PathResolver.resolve(written, against: directory)
            // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
            guard path.utf8.count <= 107 else {
                return .failure(Problem(reason: "the socket path '\(path)' is longer than 107 bytes"))
            }
            return .success(BackendAddress(kind: .unix(path: path), text: text))
        }
        let example = "e.g. \"127.0.0.1:8080\", \"[::1]:8080\", \"app.internal:8080\" or \"unix:/run/app.sock\""
        let split: (host: Substring, port: Substring, bracketed: Bool)
        switch splitHostPort(text, example: example) {
        case .success(let parts): split = parts
        case .failure(let problem): return .failure(problem)
        }
        let host = String(split.host)
        if split.host.isEmpty {
            return .failure(Problem(reason: "missing host"))
        }
        if split.bracketed {
            guard ipv6(split.host) != nil else {
                return .failure(Problem(reason: "'\(host)' is not a valid IPv6 address"))
            }
        } else if looksLikeIPv4(split.host) {
            guard ipv4(split.host) != nil else {
                return .failure(Problem(reason: "'\(host)' is not a valid IPv4 address"))
            }
        } else if let reason = dnsNameProblem(split.host, allowFinalDot: true) {
            return .failure(Problem(reason: "'\(host)' is not a valid host name: \(reason)"))
        }
        switch port(split.port, allowZero: false) {
        case .success(let port): return .success(BackendAddress(kind: .inet(host: host, port: port), text: text))
        case .failure(let problem): return .failure(problem)
        }
    }

    /// Splits `HOST:PORT` / `[HOST]:PORT`; the host comes back without brackets.
    private static func splitHostPort(
        _ text: String,
        example: String
    ) -> Result<(host: Substring, port: Substring, bracketed: Bool), Problem> {
        let expected = Problem(reason: "expected \"HOST:PORT\", \(example)")
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                return .failure(Problem(reason: "missing ']' after the IPv6 address"))
            }
            let host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.first == ":" else { return .failure(expected) }
            return .success((host, rest.dropFirst(), true))
        }
        guard let colon = text.lastIndex(of: ":") else { return .failure(expected) }
        let host = text[..<colon]
        if host.contains(":") {
            return .failure(Problem(reason: "an IPv6 address must be in brackets, e.g. \"[::1]:8443\""))
        }
        return .success((host, text[text.index(after: colon)...], false))
    }

    private static func port(_ text: Substring, allowZero: Bool) -> Result<Int, Problem> {
        let lowest = allowZero ? 0 : 1
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }),
            let value = Int(text), value >= lowest, value <= 65535
        else {
            let found = text.isEmpty ? "nothing" : "'\(text)'"
            return .failure(Problem(reason: "the port must be a number from \(lowest) to 65535, found \(found)"))
        }
        return .success(value)
    }

    /// Digits and dots only: meant as an IPv4 literal (a DNS name's last label is never all digits).
    private static func looksLikeIPv4(_ text: Substring) -> Bool {
        text.allSatisfy { $0 == "." || ($0.isASCII && $0.isNumber) }
    }

    /// Parses a dotted-quad IPv4 literal: four decimal numbers 0...255 without leading zeros
    /// (which some resolvers would read as octal).
    static func ipv4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                part.count == 1 || part.first != "0", let value = UInt8(part)
            else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    /// Parses an IPv6 literal (RFC 4291 text forms: eight groups, one `::`, an optional trailing dotted quad).
    /// Zone IDs (`%eth0`) are not accepted.
    static func ipv6(_ text: Substring) -> [UInt8]? {
        func groups(_ part: Substring, allowTrailingIPv4: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            var result: [UInt16] = []
            for (index, piece) in pieces.enumerated() {
                if allowTrailingIPv4, index == pieces.count - 1, piece.contains(".") {
                    guard let v4 = ipv4(piece) else { return nil }
                    result.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                    result.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                    continue
                }
                guard !piece.isEmpty, piece.count <= 4, piece.allSatisfy(\.isHexDigit),
                    let value = UInt16(piece, radix: 16)
                else { return nil }
                result.append(value)
            }
            return result
        }

        guard !text.isEmpty, text.allSatisfy(\.isASCII) else { return nil }
        let halves = text.split(separator: "::", omittingEmptySubsequences: false)
        let words: [UInt16]
        switch halves.count {
        case 1:
            guard let all = groups(halves[0], allowTrailingIPv4: true), all.count == 8 else { return nil }
            words = all
        case 2:
            guard let head = groups(halves[0], allowTrailingIPv4: false),
                let tail = groups(halves[1], allowTrailingIPv4: true),
                head.count + tail.count <= 7
            else { return nil }
            words = head + [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        default:
            return nil
        }
        return words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }

    /// Why `text` is not a valid DNS name (letters, digits, '-' and '_' in labels of 1...63 characters,
    /// no label starting or ending with '-', at most 253 characters), or `nil`.
    /// - Parameters:
    ///   - text: the name.
    ///   - allowWildcard: accept `*` as the whole first label, as in "*.example.org".
    ///   - allowFinalDot: accept a fully qualified "app.internal." (a resolver accepts it; SNI never carries it).
    static func dnsNameProblem(_ text: Substring, allowWildcard: Bool = false, allowFinalDot: Bool = false) -> String? {
        var name = text
        if name.hasSuffix(".") {
            guard allowFinalDot else { return "it ends with '.'" }
            name = name.dropLast()
        }
        guard !name.isEmpty else { return "it is empty" }
        guard name.utf8.count <= 253 else { return "it is longer than 253 characters" }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        for (index, label) in labels.enumerated() {
            if label == "*" {
                guard allowWildcard else { return "wildcards are not allowed here" }
                guard index == 0, labels.count > 1 else {
                    return "a wildcard must be the whole first label, e.g. \"*.example.org\""
                }
                continue
            }
            guard !label.isEmpty else { return "it has an empty label" }
            guard label.utf8.count <= 63 else { return "the label '\(label)' is longer than 63 characters" }
            if label.contains("*") { return "a wildcard must be the whole first label, e.g. \"*.example.org\"" }
            guard label.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                return "the label '\(label)' has a character other than a letter, digit, '-' or '_'"
            }
            guard label.first != "-", label.last != "-" else {
                return "the label '\(label)' starts or ends with '-'"
            }
        }
        if let last = labels.last, last.allSatisfy({ $0.isASCII && $0.isNumber }) {
            return "the last label is all digits"
        }
        return nil
    }

    /// The IP addresses a listening host stands for: `localhost` is both loopback addresses,
    /// and an IPv4-mapped IPv6 address is its IPv4 address.
    static func addresses(ofListenHost host: String) -> [IPAddress] {
        if host.lowercased() == "localhost" {
            return [.v4([127, 0, 0, 1]), .v6([UInt8](repeating: 0, count: 15) + [1])]
        }
        if let v4 = ipv4(Substring(host)) { return [.v4(v4)] }
        if let v6 = ipv6(Substring(host)) {
            if v6.prefix(10).allSatisfy({ $0 == 0 }), v6[10] == 0xff, v6[11] == 0xff {
                return [.v4(Array(v6.suffix(4)))]
            }
            return [.v6(v6)]
        }
        return []
    }

    /// Whether two listeners could not both bind: the same port (other than 0, which the kernel picks),
    /// and the same address, or `0.0.0.0` against any IPv4 address, or `::` (dual-stack) against anything.
    static func overlap(_ a: SocketAddressSpec, _ b: SocketAddressSpec) -> Bool {
        guard a.port != 0, a.port == b.port else { return false }
        for x in addresses(ofListenHost: a.host) {
            for y in addresses(ofListenHost: b.host) where coversOrEqual(x, y) || coversOrEqual(y, x) {
                return true
            }
        }
        return false
    }

    private static func coversOrEqual(_ wide: IPAddress, _ other: IPAddress) -> Bool {
        if wide == other { return true }
        switch (wide, other) {
        case (.v6, _): return wide.isUnspecified
        case (.v4, .v4): return wide.isUnspecified
        case (.v4, .v6): return false
        }
    }
}
