/// The code points the TOML parser tests for, and the character classes of the TOML grammar.
enum TOMLCharacter {
    /// What `TOMLSource.ch` returns past the end of the text.
    static let eof = UInt32.max
    static let tab: UInt32 = 0x09
    static let lf: UInt32 = 0x0A
    static let cr: UInt32 = 0x0D
    static let space: UInt32 = 0x20
    static let quote: UInt32 = 0x22  // "
    static let hash: UInt32 = 0x23  // #
    static let apostrophe: UInt32 = 0x27  // '
    static let plus: UInt32 = 0x2B
    static let comma: UInt32 = 0x2C
    static let minus: UInt32 = 0x2D
    static let dot: UInt32 = 0x2E
    static let colon: UInt32 = 0x3A
    static let equals: UInt32 = 0x3D
    static let lbracket: UInt32 = 0x5B
    static let backslash: UInt32 = 0x5C
    static let rbracket: UInt32 = 0x5D
    static let underscore: UInt32 = 0x5F
    static let lbrace: UInt32 = 0x7B
    static let rbrace: UInt32 = 0x7D
    static let bom: UInt32 = 0xFEFF

    static func isWS(_ c: UInt32) -> Bool { c == space || c == tab }
    static func isDigit(_ c: UInt32) -> Bool { c >= 0x30 && c <= 0x39 }
    static func isHex(_ c: UInt32) -> Bool {
        isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
    }
    static func isOctal(_ c: UInt32) -> Bool { c >= 0x30 && c <= 0x37 }
    static func isBinary(_ c: UInt32) -> Bool { c == 0x30 || c == 0x31 }
    static func isBare(_ c: UInt32) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || isDigit(c) || c == underscore || c == minus
    }
    /// Control characters that TOML forbids in strings and comments (tab is allowed).
    static func isControl(_ c: UInt32) -> Bool { (c < 0x20 && c != tab) || c == 0x7F }
    /// Characters that end a bare value token (number, boolean, date-time).
    static func endsToken(_ c: UInt32) -> Bool {
        switch c {
        case eof, space, tab, lf, cr, comma, rbracket, rbrace, lbracket, lbrace, hash, quote, apostrophe, equals:
            return true
        default:
            return false
        }
    }
    static func hexValue(_ c: UInt32) -> UInt32 {
        if isDigit(c) { return c - 0x30 }
        if c >= 0x41 && c <= 0x46 { return c - 0x41 + 10 }
        return c - 0x61 + 10
    }

    /// `U+000D`.
    static func codePoint(_ c: UInt32) -> String {
        let hex = String(c, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }
}
