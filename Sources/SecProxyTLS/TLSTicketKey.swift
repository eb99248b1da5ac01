import COpenSSL

/// One session ticket key: a 16-byte name (sent in clear inside every ticket, so a server can find
/// the key again), a 32-byte AES-256-CBC key and a 32-byte HMAC-SHA256 key.
///
/// The 80 bytes live in `TLSSecretBytes`, wiped when the last copy of the key is released. The AES
/// and HMAC keys are secret: `description`, `debugDescription` and the mirror (`dump`, `print` of a
/// configuration) show the name only.
public struct TLSTicketKey: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// Bytes of a key in a key file: name + AES key + HMAC key.
    public static let encodedByteCount = 80

    /// The key name, 16 bytes (not secret: it travels in every ticket).
    public let name: [UInt8]
    /// name + AES key + HMAC key.
    private let secret: TLSSecretBytes

    /// Takes `secret`, exactly `encodedByteCount` bytes.
    private init(secret: TLSSecretBytes) {
        precondition(secret.count == Self.encodedByteCount)
        self.secret = secret
        self.name = secret.withUnsafeBytes { Array($0[0..<16]) }
    }

    /// - Throws: `TLSError` unless the name is 16 bytes and both keys are 32 bytes.
    public init(name: [UInt8], aesKey: [UInt8], hmacKey: [UInt8]) throws {
        guard name.count == 16, aesKey.count == 32, hmacKey.count == 32 else {
            throw TLSError.own(
                "a ticket key needs a 16-byte name, a 32-byte AES key and a 32-byte HMAC key "
                    + "(got \(name.count), \(aesKey.count) and \(hmacKey.count) bytes)"
            )
        }
        let secret = TLSSecretBytes(capacity: Self.encodedByteCount)
        for part in [name, aesKey, hmacKey] {
            _ = part.withUnsafeBytes { secret.append($0) }
        }
        self.init(secret: secret)
    }

    /// A key from the 80 bytes of a key file line: 16-byte name, 32-byte AES key, 32-byte HMAC key.
    ///
    /// - Throws: `TLSError` unless `bytes` is exactly 80 bytes long.
    public init(bytes: [UInt8]) throws {
        guard bytes.count == Self.encodedByteCount else {
            throw TLSError.own("a ticket key is \(Self.encodedByteCount) bytes, got \(bytes.count)")
        }
        self.init(secret: TLSSecretBytes(copying: bytes))
    }

    /// A fresh key from OpenSSL's CSPRNG, generated in place.
    ///
    /// - Throws: `TLSError` when `RAND_bytes` fails.
    public static func random() throws -> TLSTicketKey {
        let secret = TLSSecretBytes(capacity: Self.encodedByteCount)
        ERR_clear_error()
        let rc = secret.withUnsafeMutableStorage {
            RAND_bytes($0.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(Self.encodedByteCount))
        }
        guard rc == 1 else {
            throw TLSError.drainingErrorQueue(operation: "RAND_bytes", fallback: "no random bytes")
        }
        secret.use(Self.encodedByteCount)
        return TLSTicketKey(secret: secret)
    }

    /// Runs `body` with the 32-byte AES key and the 32-byte HMAC key, in place.
    func withKeys<T>(_ body: (_ aes: UnsafePointer<UInt8>, _ hmac: UnsafePointer<UInt8>) throws -> T) rethrows -> T {
        try self.secret.withUnsafeBytes { bytes in
            let base = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
            return try body(base + 16, base + 48)
        }
    }

    /// Same 80 bytes (constant time, as any comparison of key material should be).
    public static func == (lhs: TLSTicketKey, rhs: TLSTicketKey) -> Bool {
        lhs.secret.withUnsafeBytes { left in
            rhs.secret.withUnsafeBytes { right in
                left.count == right.count && CRYPTO_memcmp(left.baseAddress, right.baseAddress, left.count) == 0
            }
        }
    }

    /// Reads a ticket key file: base64 of 80 bytes per key (`openssl rand -base64 80`), first key first.
    ///
    /// `openssl rand -base64 80` wraps its output after 64 characters, so a key may span consecutive
    /// lines; it ends at the line with the base64 padding (80 bytes always end in one `=`). Blank lines
    /// and lines starting with `#` are ignored between keys. The first key encrypts new tickets;
    /// every key decrypts. The file's bytes, the base64 text and the decoded keys are only ever held
    /// in `TLSSecretBytes`, so nothing of them stays in memory once the keys are released.
    ///
    /// - Parameter file: path of the key file.
    /// - Returns: at least one key, in file order.
    /// - Throws: `TLSError` naming the file and the line that is wrong: not base64, not 80 bytes,
    ///   a key cut short, a repeated key name, or no key at all. Never contains key material.
    public static func load(file: String) throws -> [TLSTicketKey] {
        var files = TLSFileSet()
        return try files.ticketKeys(file).get()
    }

    /// Parses the contents of a key file (see `load(file:)`).
    static func parse(_ contents: TLSSecretBytes) throws -> [TLSTicketKey] {
        /// Base64 characters of one key: 80 bytes → 27 groups of 4.
        let encodedLength = (Self.encodedByteCount + 2) / 3 * 4
        var keys: [TLSTicketKey] = []
        // Never longer than the file.
        let pending = TLSSecretBytes(capacity: contents.count)
        var pendingStart = 0
        var pendingEnd = 0
        var lineNumber = 0

        func lines(_ first: Int, _ last: Int) -> String {
            first == last ? "line \(first)" : "lines \(first)-\(last)"
        }

        try contents.withUnsafeBytes { text in
            // Split the bytes: "\r\n" stays visible as a trailing "\r", trimmed below.
            for rawLine in text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                lineNumber += 1
                let line = Self.trimmingASCIIWhitespace(rawLine)
                if line.isEmpty || line.first == UInt8(ascii: "#") {
                    guard pending.count == 0 else {
                        throw TLSError.own(
                            "\(lines(pendingStart, lineNumber - 1)): key is cut short "
                                + "(base64 of \(Self.encodedByteCount) bytes, \(encodedLength) characters ending in '=')"
                        )
                    }
                    continue
                }
                guard line.allSatisfy(Self.isBase64Character) else {
                    throw TLSError.own("line \(lineNumber): not base64")
                }
                if pending.count == 0 { pendingStart = lineNumber }
                _ = pending.append(UnsafeRawBufferPointer(rebasing: line))
                pendingEnd = lineNumber
                guard line.last == UInt8(ascii: "=") else {
                    guard pending.count < encodedLength else {
                        throw TLSError.own(
                            "\(lines(pendingStart, lineNumber)): not a ticket key "
                                + "(expected base64 of \(Self.encodedByteCount) bytes: `openssl rand -base64 80`)"
                        )
                    }
                    continue
                }
                guard let decoded = Self.decodeBase64(pending) else {
                    throw TLSError.own("\(lines(pendingStart, lineNumber)): not base64")
                }
                guard decoded.count == Self.encodedByteCount else {
                    throw TLSError.own(
                        "\(lines(pendingStart, lineNumber)): key is \(decoded.count) bytes, expected "
                            + "\(Self.encodedByteCount) (`openssl rand -base64 80`)"
                    )
                }
                let key = TLSTicketKey(secret: decoded)
                guard !keys.contains(where: { $0.name == key.name }) else {
                    throw TLSError.own("\(lines(pendingStart, lineNumber)): repeats the name of an earlier key")
                }
                keys.append(key)
                pending.removeAll()
            }
        }
        guard pending.count == 0 else {
            throw TLSError.own(
                "\(lines(pendingStart, pendingEnd)): key is cut short "
                    + "(base64 of \(Self.encodedByteCount) bytes, \(encodedLength) characters ending in '=')"
            )
        }
        guard !keys.isEmpty else {
            throw TLSError.own("no keys (one per line: `openssl rand -base64 80`)")
        }
        return keys
    }

    /// Decodes strict base64 (length a multiple of 4, padding only at the end) with OpenSSL, into
    /// secret storage; nil when it is not base64.
    private static func decodeBase64(_ text: TLSSecretBytes) -> TLSSecretBytes? {
        text.withUnsafeBytes { encoded -> TLSSecretBytes? in
            let padding = encoded.reversed().prefix { $0 == UInt8(ascii: "=") }.count
            guard encoded.count % 4 == 0, padding <= 2,
                encoded.dropLast(padding).allSatisfy({ $0 != UInt8(ascii: "=") })
            else { return nil }
            let decoded = TLSSecretBytes(capacity: encoded.count / 4 * 3)
            ERR_clear_error()
            // EVP_DecodeBlock counts the padding as zero bytes; they are dropped below.
            let written = decoded.withUnsafeMutableStorage {
                EVP_DecodeBlock(
                    $0.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    encoded.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    Int32(encoded.count)
                )
            }
            guard written >= padding, Int(written) <= decoded.capacity else {
                ERR_clear_error()
                return nil
            }
            decoded.use(Int(written) - padding)
            return decoded
        }
    }

    private static func trimmingASCIIWhitespace(
        _ line: Slice<UnsafeRawBufferPointer>
    ) -> Slice<UnsafeRawBufferPointer> {
        let isSpace: (UInt8) -> Bool = {
            $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r")
        }
        guard let start = line.firstIndex(where: { !isSpace($0) }), let end = line.lastIndex(where: { !isSpace($0) })
        else { return line[line.startIndex..<line.startIndex] }
        return line[start...end]
    }

    private static func isBase64Character(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"), UInt8(ascii: "="):
            return true
        default:
            return false
        }
    }

    /// The name in hex; the name is public (it travels in every ticket), the keys are not.
    public var description: String {
        "TLSTicketKey(name: \(self.name.map { String($0, radix: 16).leftPadded(to: 2) }.joined()))"
    }

    public var debugDescription: String { self.description }

    public var customMirror: Mirror {
        Mirror(self, children: ["name": self.description], displayStyle: .struct)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - self.count)) + self
    }
}
