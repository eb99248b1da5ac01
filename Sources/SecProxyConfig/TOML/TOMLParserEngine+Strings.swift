/// Strings: basic and literal, single- and multi-line, escapes, and what an unterminated one means.
extension TOMLParserEngine {
    func unterminatedString(_ open: Int, literal: Bool, isValue: Bool) -> TOMLFailure {
        let q = literal ? "'" : "\""
        if i >= n {
            return fail("unterminated string: missing closing \(q)", at: open)
        }
        var resume = TOMLFailure.Resume.nextLine
        if isValue, let end = continuedStringEnd(from: i, quote: literal ? C.apostrophe : C.quote) {
            resume = .at(end)
        }
        return fail(
            "unterminated string: missing closing \(q) before end of line (use \(q)\(q)\(q) for multi-line strings)",
            at: open, resume: resume)
    }

    /// `"..."` at `i`.
    func parseBasicString(isValue: Bool = false) throws(TOMLFailure) -> String {
        let open = i
        i += 1
        var out = TOMLStringBuilder()
        while true {
            if isEOL(i) { throw unterminatedString(open, literal: false, isValue: isValue) }
            let c = ch(i)
            if c == C.quote {
                i += 1
                return out.string
            }
            if c == C.backslash {
                parseEscape(into: &out)
            } else {
                if C.isControl(c) { reportControlCharacter(at: i) } else { out.append(source.scalars[i]) }
                i += 1
            }
        }
    }

    /// `'...'` at `i`.
    func parseLiteralString(isValue: Bool = false) throws(TOMLFailure) -> String {
        let open = i
        i += 1
        var out = TOMLStringBuilder()
        while true {
            if isEOL(i) { throw unterminatedString(open, literal: true, isValue: isValue) }
            let c = ch(i)
            if c == C.apostrophe {
                i += 1
                return out.string
            }
            if C.isControl(c) { reportControlCharacter(at: i) } else { out.append(source.scalars[i]) }
            i += 1
        }
    }

    func reportControlCharacter(at k: Int) {
        report(
            "control character \(C.codePoint(ch(k))) is not allowed in a string; use an escape sequence",
            at: k)
    }

    /// `"""..."""` or `'''...'''` at `i`.
    func parseMultilineString(literal: Bool) throws(TOMLFailure) -> String {
        let open = i
        let delimiter = literal ? C.apostrophe : C.quote
        i += 3
        if isNewline(i) { i += newlineLength(i) }
        var out = TOMLStringBuilder()
        while true {
            guard i < n else {
                let q = literal ? "'''" : "\"\"\""
                throw fail("unterminated multi-line string: missing closing \(q)", at: open, resume: .endOfFile)
            }
            let c = ch(i)
            if c == delimiter {
                var run = 0
                while ch(i + run) == delimiter { run += 1 }
                if run >= 3 {
                    // Up to two quotes may directly precede the closing delimiter.
                    let extra = min(run - 3, 2)
                    for _ in 0..<extra { out.append(source.scalars[i]) }
                    i += 3 + extra
                    return out.string
                }
                for _ in 0..<run { out.append(source.scalars[i]) }
                i += run
                continue
            }
            if isNewline(i) {
                out.append("\n")
                i += newlineLength(i)
                continue
            }
            if c == C.backslash && !literal {
                // A line-ending backslash trims the newline and all whitespace that follows.
                var k = i + 1
                while C.isWS(ch(k)) { k += 1 }
                if isNewline(k) {
                    i = k
                    while C.isWS(ch(i)) || isNewline(i) { i += isNewline(i) ? newlineLength(i) : 1 }
                } else {
                    parseEscape(into: &out)
                }
                continue
            }
            if C.isControl(c) { reportControlCharacter(at: i) } else { out.append(source.scalars[i]) }
            i += 1
        }
    }

    /// `i` is at a backslash in a basic string. Invalid escapes are reported (not fatal).
    func parseEscape(into out: inout TOMLStringBuilder) {
        let backslash = i
        i += 1
        let c = ch(i)
        switch c {
        case 0x62: out.append("\u{08}"); i += 1  // b
        case 0x74: out.append("\t"); i += 1  // t
        case 0x6E: out.append("\n"); i += 1  // n
        case 0x66: out.append("\u{0C}"); i += 1  // f
        case 0x72: out.append("\r"); i += 1  // r
        case C.quote: out.append("\""); i += 1
        case C.backslash: out.append("\\"); i += 1
        case 0x75, 0x55:  // u, U
            let length = c == 0x75 ? 4 : 8
            i += 1
            var value: UInt32 = 0
            var count = 0
            while count < length && C.isHex(ch(i)) {
                value = value &* 16 &+ C.hexValue(ch(i))
                count += 1
                i += 1
            }
            let escape = text(backslash..<i)
            if count < length {
                report(
                    "invalid unicode escape '\(escape)': \\\(c == 0x75 ? "u" : "U") must be followed by \(length) hex digits",
                    at: backslash)
            } else if let scalar = Unicode.Scalar(value) {
                out.append(scalar)
            } else {
                report("invalid unicode escape '\(escape)': not a Unicode scalar value", at: backslash)
            }
        default:
            if isEOL(i) {
                // `"abc\` at the end of a line: reported as an unterminated string.
                return
            }
            let shown = C.isControl(c) ? C.codePoint(c) : "\\\(source.scalars[i])"
            report("invalid escape sequence '\(shown)' in string", at: backslash)
            i += 1
        }
    }
}
