import COpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One session ticket key: a 16-byte name (sent in clear inside every ticket, so a server can find
/// the key again), a 32-byte AES-256-CBC key and a 32-byte HMAC-SHA256 key.
///
/// The AES and HMAC keys are secret: `description`, `debugDescription` and the mirror (`dump`,
/// `print` of a configuration) show the name only.
public struct TLSTicketKey: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// Bytes of a key in a key file: name + AES key + HMAC key.
    public static let encodedByteCount = 80

    /// The key name, 16 bytes.
    public let name: [UInt8]
    /// The AES-256-CBC key, 32 bytes.
    let aesKey: [UInt8]
    /// The HMAC-SHA256 key, 32 bytes.
    let hmacKey: [UInt8]

    /// - Throws: `TLSError` unless the name is 16 bytes and both keys are 32 bytes.
    public init(name: [UInt8], aesKey: [UInt8], hmacKey: [UInt8]) throws {
        guard name.count == 16, aesKey.count == 32, hmacKey.count == 32 else {
            throw TLSError.own(
                "a ticket key needs a 16-byte name, a 32-byte AES key and a 32-byte HMAC key "
                    + "(got \(name.count), \(aesKey.count) and \(hmacKey.count) bytes)"
            )
        }
        self.name = name
        self.aesKey = aesKey
        self.hmacKey = hmacKey
    }

    /// A key from the 80 bytes of a key file line: 16-byte name, 32-byte AES key, 32-byte HMAC key.
    ///
    /// - Throws: `TLSError` unless `bytes` is exactly 80 bytes long.
    public init(bytes: [UInt8]) throws {
        guard bytes.count == Self.encodedByteCount else {
            throw TLSError.own("a ticket key is \(Self.encodedByteCount) bytes, got \(bytes.count)")
        }
        try self.init(name: Array(bytes[0..<16]), aesKey: Array(bytes[16..<48]), hmacKey: Array(bytes[48..<80]))
    }

    /// A fresh key from OpenSSL's CSPRNG.
    ///
    /// - Throws: `TLSError` when `RAND_bytes` fails.
    public static func random() throws -> TLSTicketKey {
        var bytes = [UInt8](repeating: 0, count: Self.encodedByteCount)
        ERR_clear_error()
        let rc = bytes.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32($0.count)) }
        guard rc == 1 else {
            throw TLSError.drainingErrorQueue(operation: "RAND_bytes", fallback: "no random bytes")
        }
        return try TLSTicketKey(bytes: bytes)
    }

    /// Reads a ticket key file: base64 of 80 bytes per key (`openssl rand -base64 80`), first key first.
    ///
    /// `openssl rand -base64 80` wraps its output after 64 characters, so a key may span consecutive
    /// lines; it ends at the line with the base64 padding (80 bytes always end in one `=`). Blank lines
    /// and lines starting with `#` are ignored between keys. The first key encrypts new tickets;
    /// every key decrypts.
    ///
    /// - Parameter file: path of the key file.
    /// - Returns: at least one key, in file order.
    /// - Throws: `TLSError` naming the file and the line that is wrong: not base64, not 80 bytes,
    ///   a key cut short, a repeated key name, or no key at all. Never contains key material.
    public static func load(file: String) throws -> [TLSTicketKey] {
        do {
            let bytes = try FileBytes.contents(of: file)
            return try self.parse(String(decoding: bytes, as: UTF8.self))
        } catch let error as TLSError {
            throw TLSError(reason: "ticket key file \(file): \(error.reason)")
        }
    }

    /// Parses the text of a key file (see `load(file:)`).
    static func parse(_ text: String) throws -> [TLSTicketKey] {
        /// Base64 characters of one key: 80 bytes → 27 groups of 4.
        let encodedLength = (Self.encodedByteCount + 2) / 3 * 4
        var keys: [TLSTicketKey] = []
        var pending = ""
        var pendingStart = 0
        var pendingEnd = 0
        var lineNumber = 0

        func lines(_ first: Int, _ last: Int) -> String {
            first == last ? "line \(first)" : "lines \(first)-\(last)"
        }

        // Split the bytes, not Characters: "\r\n" is one Character and would hide the line break.
        for rawLine in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Self.trimmingASCIIWhitespace(rawLine)
            if line.isEmpty || line.first == UInt8(ascii: "#") {
                guard pending.isEmpty else {
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
            if pending.isEmpty { pendingStart = lineNumber }
            pending += String(decoding: line, as: UTF8.self)
            pendingEnd = lineNumber
            guard line.last == UInt8(ascii: "=") else {
                guard pending.utf8.count < encodedLength else {
                    throw TLSError.own(
                        "\(lines(pendingStart, lineNumber)): not a ticket key "
                            + "(expected base64 of \(Self.encodedByteCount) bytes: `openssl rand -base64 80`)"
                    )
                }
                continue
            }
            // Padding only at the end (Foundation's decoder is lenient about it).
            let padding = pending.utf8.reversed().prefix { $0 == UInt8(ascii: "=") }.count
            guard padding <= 2, pending.utf8.dropLast(padding).allSatisfy({ $0 != UInt8(ascii: "=") }),
                let data = Data(base64Encoded: pending)
            else {
                throw TLSError.own("\(lines(pendingStart, lineNumber)): not base64")
            }
            guard data.count == Self.encodedByteCount else {
                throw TLSError.own(
                    "\(lines(pendingStart, lineNumber)): key is \(data.count) bytes, expected "
                        + "\(Self.encodedByteCount) (`openssl rand -base64 80`)"
                )
            }
            let key = try TLSTicketKey(bytes: Array(data))
            guard !keys.contains(where: { $0.name == key.name }) else {
                throw TLSError.own("\(lines(pendingStart, lineNumber)): repeats the name of an earlier key")
            }
            keys.append(key)
            pending = ""
        }
        guard pending.isEmpty else {
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

    private static func trimmingASCIIWhitespace(_ line: Substring.UTF8View) -> Substring.UTF8View {
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
