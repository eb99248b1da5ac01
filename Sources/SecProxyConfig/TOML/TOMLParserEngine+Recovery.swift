/// Error recovery: where a broken construct ends, and the look-ahead that tells a missing `]` from a stray
/// `key = value` inside an array. Every scan here either stays within one line or asks `TOMLBracketMatches`,
/// so recovery is linear in the length of the text however broken it is.
extension TOMLParserEngine {
    /// Applies a failure at statement level: reports it and moves to where parsing resumes.
    func recover(_ failure: TOMLFailure) {
        if let problem = failure.problem { record(problem) }
        switch failure.resume {
        case .nextLine:
            skipToNextLine()
        case .at(let k), .statement(let k):
            i = k
        case .endOfFile:
            i = n
        }
    }

    func skipToNextLine() {
        while i < n && !isNewline(i) { i += 1 }
        if i < n { i += newlineLength(i) }
    }

    /// Whether a `]` closes the array that the line starting at `k` is in, before the next table header or the
    /// end of file (`k` is the line's first non-blank character).
    func arrayIsClosedLater(from k: Int) -> Bool {
        guard let closer = brackets.closer(ofLine: location(k).line - 1) else { return false }
        return ch(closer) == C.rbracket
    }

    /// Where to resume after an inline table that is not closed on its line: after its `}`
    /// on a later line, if there is one before the next table header.
    func inlineTableEnd(_ open: Int) -> Int? {
        guard let closer = brackets.closer(ofOpenerAt: open), ch(closer) == C.rbrace else { return nil }
        return closer + 1
    }

    /// From `k`, the index of the next `,` or `]` at nesting depth 0, a comment, or the end of the line.
    /// Brackets pop to their matching opener: an unmatched `}` is skipped, an unmatched `]` ends the array.
    func skipElementRest(from k: Int) -> Int {
        var scanner = TOMLBracketScanner(source, from: k)
        var open: [UInt32] = []
        var openBrackets = 0
        var openBraces = 0
        while let event = scanner.next() {
            switch event {
            case .comment(let j), .lineEnd(let j):
                return j
            case .comma(let j):
                if open.isEmpty { return j }
            case .open(let j):
                let c = ch(j)
                open.append(c)
                if c == C.lbracket { openBrackets += 1 } else { openBraces += 1 }
            case .close(let j):
                let isBracket = ch(j) == C.rbracket
                guard isBracket ? openBrackets > 0 : openBraces > 0 else {
                    if isBracket { return j }
                    continue
                }
                // Each opener is popped once: linear however the brackets are mixed.
                let opener = isBracket ? C.lbracket : C.lbrace
                while let popped = open.popLast() {
                    if popped == C.lbracket { openBrackets -= 1 } else { openBraces -= 1 }
                    if popped == opener { break }
                }
            }
        }
        return scanner.position
    }

    func isFirstOnLine(_ k: Int) -> Bool {
        var j = k - 1
        while j >= 0 && C.isWS(ch(j)) { j -= 1 }
        return j < 0 || ch(j) == C.lf || (j == 0 && ch(j) == C.bom)
    }

    func lineStart(_ k: Int) -> Int {
        var j = k
        while j > 0 && ch(j - 1) != C.lf { j -= 1 }
        return j
    }

    /// Scans a key (bare/quoted segments with dots) from `k` without reporting anything.
    /// Returns the index after it and the number of segments, or nil.
    func scanKey(from k: Int) -> (end: Int, segments: Int, quotedOnly: Bool)? {
        var j = k
        var segments = 0
        var quotedOnly = true
        while true {
            while C.isWS(ch(j)) { j += 1 }
            let c = ch(j)
            if C.isBare(c) {
                while C.isBare(ch(j)) { j += 1 }
                quotedOnly = false
            } else if c == C.quote || c == C.apostrophe {
                if ch(j + 1) == c && ch(j + 2) == c { return nil }
                let segmentStart = j
                j = source.skipQuoted(j)
                if ch(j - 1) != c || j - 1 == segmentStart { return nil }
            } else {
                return nil
            }
            segments += 1
            var m = j
            while C.isWS(ch(m)) { m += 1 }
            if ch(m) == C.dot {
                j = m + 1
                continue
            }
            return (j, segments, quotedOnly)
        }
    }

    func looksLikeKeyValue(_ k: Int) -> Bool {
        guard let key = scanKey(from: k) else { return false }
        var j = key.end
        while C.isWS(ch(j)) { j += 1 }
        return ch(j) == C.equals && ch(j + 1) != C.equals
    }

    /// True when the line at `k` is a `[header]` / `[[header]]` and not a plausible array value.
    func looksLikeHeader(_ k: Int) -> Bool {
        guard ch(k) == C.lbracket else { return false }
        var j = k + 1
        let isArray = ch(j) == C.lbracket
        if isArray { j += 1 }
        while C.isWS(ch(j)) { j += 1 }
        let contentStart = j
        guard let key = scanKey(from: j) else { return false }
        j = key.end
        let contentEnd = j
        while C.isWS(ch(j)) { j += 1 }
        guard ch(j) == C.rbracket else { return false }
        j += 1
        if isArray {
            guard ch(j) == C.rbracket else { return false }
            j += 1
        }
        while C.isWS(ch(j)) { j += 1 }
        guard isEOL(j) || ch(j) == C.hash else { return false }
        if key.segments == 1 && key.quotedOnly { return false }  // ["a"] is also a valid array
        if case .value = TOMLToken.classify(source.scalars[contentStart..<contentEnd]) { return false }  // [1], [true], [1.5]
        return true
    }

    /// A single-line string hit the end of line at `k`. If a following line (that is not a statement)
    /// closes it, e.g. `x = "abc` + `def"`, returns the index after that closing quote, so that the
    /// continuation is not parsed as a (broken) statement.
    func continuedStringEnd(from k: Int, quote: UInt32) -> Int? {
        var j = k
        for _ in 0..<20 {
            guard isNewline(j) else { return nil }
            j += newlineLength(j)
            var m = j
            while C.isWS(ch(m)) { m += 1 }
            if looksLikeKeyValue(m) || looksLikeHeader(m) { return nil }
            while !isEOL(j) {
                if ch(j) == quote {
                    var after = j + 1
                    while C.isWS(ch(after)) { after += 1 }
                    let c = ch(after)
                    let ends = isEOL(after) || c == C.hash || c == C.comma || c == C.rbracket || c == C.rbrace
                    return ends ? j + 1 : nil
                }
                if quote == C.quote && ch(j) == C.backslash && !isEOL(j + 1) { j += 1 }
                j += 1
            }
        }
        return nil
    }
}
