/// Values: scalars, arrays and inline tables. Arrays and inline tables recurse through `parseValue`, one
/// level per `TOMLParser.maximumNesting` level at most: the input cannot make the recursion deeper.
extension TOMLParserEngine {
    func parseValue() throws(TOMLFailure) -> TOMLNode {
        let start = i
        let startLocation = location(start)
        let c = ch(i)
        switch c {
        case C.quote:
            let value =
                ch(i + 1) == C.quote && ch(i + 2) == C.quote
                ? try parseMultilineString(literal: false) : try parseBasicString(isValue: true)
            return TOMLNode(.string(value), at: startLocation)
        case C.apostrophe:
            let value =
                ch(i + 1) == C.apostrophe && ch(i + 2) == C.apostrophe
                ? try parseMultilineString(literal: true) : try parseLiteralString(isValue: true)
            return TOMLNode(.string(value), at: startLocation)
        case C.lbracket:
            try enterNested(closingWith: C.rbracket)
            defer { depth -= 1 }
            return try parseArray()
        case C.lbrace:
            try enterNested(closingWith: C.rbrace)
            defer { depth -= 1 }
            return try parseInlineTable()
        default:
            while !C.endsToken(ch(i)) { i += 1 }
            if i == start { throw fail(TOMLToken.invalidValue, at: start) }
            // A date and a time separated by a space: `1979-05-27 07:32:00Z`.
            if i - start == 10 && ch(start + 4) == C.minus && ch(start + 7) == C.minus && ch(i) == C.space
                && C.isDigit(ch(i + 1)) && C.isDigit(ch(i + 2)) && ch(i + 3) == C.colon
            {
                i += 1
                while !C.endsToken(ch(i)) { i += 1 }
            }
            switch TOMLToken.classify(source.scalars[start..<i]) {
            case .value(let value):
                return TOMLNode(value, at: startLocation)
            case .invalid(let message):
                throw fail(message, at: start)
            }
        }
    }

    /// `i` is at the `[` or `{` of a value one level below `depth`: counts that level, or, when it is one too
    /// many, skips the whole construct without parsing it (to after its closer when one closes it, else to the
    /// end of the line) and throws its problem.
    private func enterNested(closingWith closer: UInt32) throws(TOMLFailure) {
        guard depth < TOMLParser.maximumNesting else {
            let open = i
            if let end = brackets.closer(ofOpenerAt: open), ch(end) == closer {
                throw tooDeep(at: open, resume: .at(end + 1))
            }
            throw tooDeep(at: open)
        }
        depth += 1
    }

    // MARK: Arrays

    /// Skips whitespace, newlines and comments between array elements.
    private func skipArrayTrivia() {
        while true {
            skipWS()
            if isNewline(i) {
                i += newlineLength(i)
            } else if ch(i) == C.hash {
                skipComment()
            } else {
                return
            }
        }
    }

    private func parseArray() throws(TOMLFailure) -> TOMLNode {
        let open = i
        let openLocation = location(open)
        i += 1
        var elements: [TOMLNode] = []
        func unterminated(resume: TOMLFailure.Resume) -> TOMLFailure {
            fail("unterminated array: missing ']'", at: open, resume: resume)
        }
        /// A statement (`[header]`, or `key =` when no `]` closes the array before the next header)
        /// starting a line inside the array means a missing `]`.
        func checkStatement() throws(TOMLFailure) {
            guard isFirstOnLine(i) else { return }
            if looksLikeHeader(i) || (looksLikeKeyValue(i) && !arrayIsClosedLater(from: i)) {
                throw unterminated(resume: .statement(lineStart(i)))
            }
        }
        while true {
            skipArrayTrivia()
            if i >= n { throw unterminated(resume: .endOfFile) }
            if ch(i) == C.rbracket {
                i += 1
                return TOMLNode(.array(elements), at: openLocation)
            }
            try checkStatement()
            let elementStart = i
            do throws(TOMLFailure) {
                elements.append(try parseValue())
            } catch {
                switch error.resume {
                case .statement, .endOfFile:
                    throw error
                case .nextLine:
                    if let problem = error.problem { record(problem) }
                    i = skipElementRest(from: elementStart)
                    if ch(i) == C.comma { i += 1 }
                    continue
                case .at(let k):
                    if let problem = error.problem { record(problem) }
                    i = k
                }
            }
            // After an element: ',' or ']'.
            skipArrayTrivia()
            if i >= n { throw unterminated(resume: .endOfFile) }
            switch ch(i) {
            case C.comma:
                i += 1
            case C.rbracket:
                i += 1
                return TOMLNode(.array(elements), at: openLocation)
            case C.rbrace:
                throw fail("expected ',' or ']' after array element", at: i)
            default:
                try checkStatement()
                report("expected ',' or ']' after array element", at: i)
                i = skipElementRest(from: i)
                if ch(i) == C.comma { i += 1 }
            }
        }
    }

    // MARK: Inline tables

    private func parseInlineTable() throws(TOMLFailure) -> TOMLNode {
        let open = i
        let openLocation = location(open)
        i += 1
        let table = TOMLMutableTable(kind: .inline, location: openLocation)
        func unterminated() -> TOMLFailure {
            let resume: TOMLFailure.Resume = inlineTableEnd(open).map { .at($0) } ?? .nextLine
            return fail(
                "unterminated inline table: missing '}' (inline tables must be on a single line)",
                at: open, resume: resume)
        }
        var lastComma: Int?
        while true {
            skipWS()
            if isEOL(i) || ch(i) == C.hash { throw unterminated() }
            if ch(i) == C.rbrace {
                if let comma = lastComma {
                    report("trailing comma is not allowed in an inline table", at: comma)
                }
                i += 1
                return TOMLNode(.table(table.freeze()), at: openLocation)
            }
            let (key, value) = try parseKeyValue()
            insert(key, value, into: table)
            skipWS()
            switch ch(i) {
            case C.comma:
                lastComma = i
                i += 1
            case C.rbrace:
                i += 1
                return TOMLNode(.table(table.freeze()), at: openLocation)
            default:
                if isEOL(i) || ch(i) == C.hash { throw unterminated() }
                throw fail("expected ',' or '}' in inline table", at: i)
            }
        }
    }
}
