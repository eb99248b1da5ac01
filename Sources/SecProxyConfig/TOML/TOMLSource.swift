/// The text being parsed, as Unicode scalars, with what every part of the parser asks of it: the character at
/// an index, line ends, positions, and where a quoted string ends.
///
/// Indices are scalar offsets; reading past either end gives `TOMLCharacter.eof`, so look-ahead needs no
/// bounds checks.
struct TOMLSource {
    private typealias C = TOMLCharacter

    let scalars: [Unicode.Scalar]
    /// The number of scalars.
    let count: Int
    /// Where parsing starts: 1 after a byte order mark, else 0.
    let startIndex: Int
    /// Index of the first scalar of each line; line 1 starts after a byte order mark, which editors do not show,
    /// so that columns of line 1 do not count it.
    private let lineStarts: [Int]

    init(_ text: String) {
        scalars = Array(text.unicodeScalars)
        count = scalars.count
        startIndex = scalars.first?.value == C.bom ? 1 : 0
        var starts = [startIndex]
        for k in 0..<count where scalars[k] == "\n" {
            starts.append(k + 1)
        }
        lineStarts = starts
    }

    /// The code point at `k`, or `TOMLCharacter.eof` outside the text.
    func ch(_ k: Int) -> UInt32 { k >= 0 && k < count ? scalars[k].value : C.eof }

    /// The 1-based line and column of index `k`.
    func location(_ k: Int) -> SourceLocation {
        var lo = 0
        var hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= k { lo = mid } else { hi = mid - 1 }
        }
        return SourceLocation(line: lo + 1, column: k - lineStarts[lo] + 1)
    }

    /// The number of lines (a text without a line feed has one).
    var lineCount: Int { lineStarts.count }

    /// A line end (LF or CRLF) starts at `k`; a lone CR is not one.
    func isNewline(_ k: Int) -> Bool {
        let c = ch(k)
        return c == C.lf || (c == C.cr && ch(k + 1) == C.lf)
    }

    func newlineLength(_ k: Int) -> Int { ch(k) == C.cr ? 2 : 1 }

    /// The end of a line or of the text is at `k`.
    func isEOL(_ k: Int) -> Bool { k >= count || isNewline(k) }

    /// The text of `range`.
    func text(_ range: Range<Int>) -> String {
        var builder = TOMLStringBuilder()
        builder.bytes.reserveCapacity(range.count)
        for scalar in scalars[range] { builder.append(scalar) }
        return builder.string
    }

    /// Index after a quoted string starting at `k` (its opening quote): single-line strings stop at the end of
    /// the line, multi-line ones at their closing delimiter or the end of the text. Reports nothing; the
    /// look-ahead and recovery scans use it to step over strings, so brackets inside them do not count.
    func skipQuoted(_ k: Int) -> Int {
        let q = ch(k)
        var j = k
        if ch(j + 1) == q && ch(j + 2) == q {
            j += 3
            while j < count {
                if ch(j) == q && ch(j + 1) == q && ch(j + 2) == q {
                    j += 3
                    while ch(j) == q { j += 1 }
                    return j
                }
                if q == C.quote && ch(j) == C.backslash { j += 1 }
                j += 1
            }
            return count
        }
        j += 1
        while !isEOL(j) {
            if ch(j) == q { return j + 1 }
            if q == C.quote && ch(j) == C.backslash && !isEOL(j + 1) { j += 1 }
            j += 1
        }
        return j
    }
}

/// Builds a string from scalars through UTF-8 (much faster than appending to a `UnicodeScalarView`).
struct TOMLStringBuilder {
    var bytes: [UInt8] = []

    mutating func append(_ scalar: Unicode.Scalar) {
        if scalar.isASCII {
            bytes.append(UInt8(truncatingIfNeeded: scalar.value))
        } else {
            bytes.append(contentsOf: UTF8.encode(scalar)!)
        }
    }

    var string: String { String(decoding: bytes, as: UTF8.self) }
}
