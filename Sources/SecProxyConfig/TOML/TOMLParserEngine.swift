/// A parse failure that aborts the construct being read, with where to resume.
struct TOMLFailure: Error {
    enum Resume {
        /// Skip the rest of the current line.
        case nextLine
        /// Resume at this index (the broken construct ends there); arrays may catch this.
        case at(Int)
        /// Resume at this index at statement level (an unterminated array); arrays re-throw.
        case statement(Int)
        /// Nothing more can be read (an unterminated multi-line string).
        case endOfFile
    }

    /// `nil` when the problem has already been reported.
    var problem: TOMLProblem?
    var resume: Resume
}

/// The parser's state for one text: the position, the document being built and the problems found.
///
/// Its concerns live in extensions: keys (`+Keys`), strings (`+Strings`), values, arrays and inline tables
/// (`+Values`), the tables that headers and dotted keys create (`+Tables`), and skipping broken constructs
/// (`+Recovery`). Numbers and dates are `TOMLToken`; the look-ahead scan is `TOMLBracketScanner`.
final class TOMLParserEngine {
    typealias C = TOMLCharacter

    let source: TOMLSource
    /// The current index into `source`.
    var i: Int
    var problems: [TOMLProblem] = []
    let root = TOMLMutableTable(kind: .root, location: SourceLocation(line: 1, column: 1))
    /// Levels of tables, arrays and inline tables around what is being parsed (see `TOMLParser.maximumNesting`).
    var depth = 0
    /// The number of segments of the last table header: the level of the table that key/value lines go into.
    var tableDepth = 0
    /// Built at the first look-ahead question; most valid documents never ask one.
    private var bracketMatches: TOMLBracketMatches?

    init(_ text: String) {
        source = TOMLSource(text)
        i = source.startIndex
    }

    func run() -> TOMLDocument {
        var current = root
        while i < n {
            skipWS()
            guard i < n else { break }
            if isNewline(i) {
                i += newlineLength(i)
                continue
            }
            let c = ch(i)
            if c == C.hash {
                skipComment()
            } else if c == C.lbracket {
                current = headerStatement()
            } else {
                keyValueStatement(into: current)
            }
        }
        return TOMLDocument(root: root.freeze(), problems: sortedProblems())
    }

    /// The look-ahead table, built on first use.
    var brackets: TOMLBracketMatches {
        if let bracketMatches { return bracketMatches }
        let built = TOMLBracketMatches(source) { looksLikeHeader($0) }
        bracketMatches = built
        return built
    }

    // MARK: Positions and characters

    var n: Int { source.count }

    func ch(_ k: Int) -> UInt32 { source.ch(k) }

    func location(_ index: Int) -> SourceLocation { source.location(index) }

    func isNewline(_ k: Int) -> Bool { source.isNewline(k) }

    func newlineLength(_ k: Int) -> Int { source.newlineLength(k) }

    func isEOL(_ k: Int) -> Bool { source.isEOL(k) }

    func skipWS() {
        while C.isWS(ch(i)) { i += 1 }
    }

    func text(_ range: Range<Int>) -> String { source.text(range) }

    func describe(_ k: Int) -> String {
        if k >= n { return "end of file" }
        if isNewline(k) { return "end of line" }
        let c = ch(k)
        if C.isControl(c) { return "control character \(C.codePoint(c))" }
        return "'\(source.scalars[k])'"
    }

    /// `'@'`, or `U+000D` for control characters.
    func characterName(_ k: Int) -> String {
        let c = ch(k)
        return C.isControl(c) ? C.codePoint(c) : "'\(source.scalars[k])'"
    }

    // MARK: Problems

    /// Past the limit of problems (`record`): what is found is no longer kept, so need not be located.
    var isFull: Bool { problems.count > TOMLParser.maximumProblems }

    func report(_ message: String, at index: Int) {
        guard !isFull else { return }
        record(TOMLProblem(location: location(index), message: message))
    }

    func report(_ message: String, at location: SourceLocation) {
        record(TOMLProblem(location: location, message: message))
    }

    /// Keeps `problem`, up to `TOMLParser.maximumProblems`; the first one beyond is replaced by a note that
    /// the rest are not shown. Parsing goes on (the document is still read whole), but a hostile file of a
    /// million broken lines does not make a million diagnostics to sort, print and log on every reload.
    func record(_ problem: TOMLProblem) {
        if problems.count < TOMLParser.maximumProblems {
            problems.append(problem)
        } else if problems.count == TOMLParser.maximumProblems {
            problems.append(
                TOMLProblem(
                    location: problem.location,
                    message: "too many syntax errors: only the first \(TOMLParser.maximumProblems) are reported"
                )
            )
        }
    }

    func fail(_ message: String, at index: Int, resume: TOMLFailure.Resume = .nextLine) -> TOMLFailure {
        TOMLFailure(problem: isFull ? nil : TOMLProblem(location: location(index), message: message), resume: resume)
    }

    /// The problem of a construct nested one level too deep, at `index` (its opening character or key segment).
    func tooDeep(at index: Int, resume: TOMLFailure.Resume = .nextLine) -> TOMLFailure {
        fail(
            "nesting is too deep: at most \(TOMLParser.maximumNesting) levels of tables, arrays and inline tables "
                + "are allowed",
            at: index, resume: resume)
    }

    private func sortedProblems() -> [TOMLProblem] {
        var seen = Set<String>()
        var unique: [TOMLProblem] = []
        for p in problems where seen.insert("\(p.location) \(p.message)").inserted {
            unique.append(p)
        }
        return unique.enumerated().sorted { a, b in
            a.element.location == b.element.location ? a.offset < b.offset : a.element.location < b.element.location
        }.map(\.element)
    }

    // MARK: Statements

    /// `i` is at `#`: skips the comment up to (not including) the end of the line.
    func skipComment() {
        i += 1
        while !isEOL(i) {
            let c = ch(i)
            if C.isControl(c) {
                report("control character \(C.codePoint(c)) is not allowed in a comment", at: i)
            }
            i += 1
        }
    }

    func expectEndOfLine(after what: String) throws(TOMLFailure) {
        skipWS()
        if ch(i) == C.hash { skipComment() }
        if i >= n { return }
        if isNewline(i) {
            i += newlineLength(i)
            return
        }
        throw fail("expected end of line after \(what)", at: i)
    }

    private func keyValueStatement(into table: TOMLMutableTable) {
        let c = ch(i)
        guard C.isBare(c) || c == C.quote || c == C.apostrophe else {
            if c == C.equals {
                recover(fail("missing key before '='", at: i))
            } else {
                recover(fail("invalid character \(characterName(i)): expected a key, a table header or a comment", at: i))
            }
            return
        }
        depth = tableDepth
        do throws(TOMLFailure) {
            let key = try parseKeyValue()
            insert(key.key, key.value, into: table)
            try expectEndOfLine(after: "value")
        } catch {
            if case .at(let k) = error.resume {
                // A broken construct whose end we found: check the rest of its line.
                if let problem = error.problem { record(problem) }
                i = k
                do throws(TOMLFailure) {
                    try expectEndOfLine(after: "value")
                } catch {
                    recover(error)
                }
            } else {
                recover(error)
            }
        }
    }

    /// `[header]` or `[[header]]`: returns the table that the following keys go into.
    private func headerStatement() -> TOMLMutableTable {
        let open = i
        do throws(TOMLFailure) {
            i += 1
            let isArray = ch(i) == C.lbracket
            if isArray { i += 1 }
            skipWS()
            if ch(i) == C.rbracket {
                throw fail(isArray ? "empty array of tables header" : "empty table header", at: open)
            }
            let key = try parseKey()
            if key.count > TOMLParser.maximumNesting {
                throw tooDeep(at: key[TOMLParser.maximumNesting].index)
            }
            skipWS()
            let closing = isArray ? "expected ']]' to close the array of tables header" : "expected ']' to close the table header"
            guard ch(i) == C.rbracket else { throw fail(closing, at: i) }
            i += 1
            if isArray {
                guard ch(i) == C.rbracket else { throw fail(closing, at: i) }
                i += 1
            }
            let table = define(key, header: open, isArray: isArray)
            tableDepth = key.count
            do throws(TOMLFailure) {
                try expectEndOfLine(after: "table header")
            } catch {
                recover(error)
            }
            return table
        } catch {
            recover(error)
            return TOMLMutableTable(kind: .discarded, location: location(open))
        }
    }
}
