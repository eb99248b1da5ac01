/// Walks the text from an index and reports the characters that give TOML its nesting — brackets, braces,
/// commas, comments and line ends — stepping over quoted strings (whose brackets do not count) and the insides
/// of comments. Reports nothing; it is the one scan behind the parser's look-ahead and error recovery.
///
/// Each step moves forward, so a full scan is linear in the length of the text.
struct TOMLBracketScanner {
    private typealias C = TOMLCharacter

    enum Event: Equatable {
        /// `[` or `{` at this index.
        case open(Int)
        /// `]` or `}` at this index.
        case close(Int)
        /// `,` at this index.
        case comma(Int)
        /// `#` at this index; the scanner then skips the rest of the line.
        case comment(Int)
        /// A line end (LF, or the CR of a CRLF) at this index.
        case lineEnd(Int)
    }

    let source: TOMLSource
    /// The next index to look at; at least `source.count` once `next()` returned nil.
    private(set) var position: Int

    init(_ source: TOMLSource, from start: Int) {
        self.source = source
        position = start
    }

    mutating func next() -> Event? {
        while position < source.count {
            let j = position
            switch source.ch(j) {
            case C.quote, C.apostrophe:
                position = source.skipQuoted(j)
            case C.hash:
                position = j + 1
                while !source.isEOL(position) { position += 1 }
                return .comment(j)
            case C.lf:
                position = j + 1
                return .lineEnd(j)
            case C.cr where source.ch(j + 1) == C.lf:
                position = j + 2
                return .lineEnd(j)
            case C.lbracket, C.lbrace:
                position = j + 1
                return .open(j)
            case C.rbracket, C.rbrace:
                position = j + 1
                return .close(j)
            case C.comma:
                position = j + 1
                return .comma(j)
            default:
                position = j + 1
            }
        }
        return nil
    }
}

/// Which `]` or `}` closes each `[` and `{` of the text, found by one scan of the whole text, so that every
/// look-ahead question of the parser is answered without scanning again (asking them by scanning from each
/// position made parsing quadratic in the length of a hostile file).
///
/// Brackets are counted regardless of their kind, as a reader skimming a broken file would; a table header
/// line ends everything open before it (a `]` after `[server]` does not close an array from before it).
/// "The closer of a line" is the one that ends whatever is open where that line starts: the first `]` or `}`
/// after it that is not matched by an opener after it.
struct TOMLBracketMatches {
    /// For each opener index, the index of its closer; absent when unmatched before a header or the end.
    private var closerOfOpener: [Int: Int] = [:]
    /// For each stray-closer level (a closer with nothing open before it), that closer's index, or -1.
    private var closerOfBase: [Int] = []
    /// For each line (0-based), what is innermost open where it starts: an opener index, or `-(level + 1)` for
    /// a base level; `Int.min` for a line that starts inside a multi-line string.
    private var innermostAtLine: [Int]

    /// Scans `source` once.
    /// - Parameters:
    ///   - source: the text.
    ///   - isHeaderLine: whether the line whose first non-blank character is at this index is a table header.
    init(_ source: TOMLSource, isHeaderLine: (Int) -> Bool) {
        innermostAtLine = [Int](repeating: Int.min, count: source.lineCount)
        var stack: [Int] = []
        func pushBase() {
            closerOfBase.append(-1)
            stack.append(-closerOfBase.count)
        }
        pushBase()
        innermostAtLine[0] = stack[stack.count - 1]
        var scanner = TOMLBracketScanner(source, from: source.startIndex)
        while let event = scanner.next() {
            switch event {
            case .open(let j):
                stack.append(j)
            case .close(let j):
                let top = stack.removeLast()
                if top >= 0 { closerOfOpener[top] = j } else { closerOfBase[-top - 1] = j }
                if stack.isEmpty { pushBase() }
            case .lineEnd(let j):
                var m = j + source.newlineLength(j)
                guard m < source.count else { break }
                let line = source.location(m).line - 1
                while TOMLCharacter.isWS(source.ch(m)) { m += 1 }
                if isHeaderLine(m) {
                    stack.removeAll()
                    pushBase()
                }
                innermostAtLine[line] = stack[stack.count - 1]
            case .comma, .comment:
                break
            }
        }
    }

    /// The index of the `]` or `}` that closes the opener at `index`; nil when nothing closes it before a table
    /// header or the end of the text, or when the scan saw no opener there (inside a string, by its reading).
    func closer(ofOpenerAt index: Int) -> Int? {
        closerOfOpener[index]
    }

    /// The index of the first `]` or `}` after the start of `line` (0-based) that no opener after that start
    /// matches; nil when none comes before a table header or the end of the text, or when the line starts
    /// inside a multi-line string.
    func closer(ofLine line: Int) -> Int? {
        guard line >= 0, line < innermostAtLine.count else { return nil }
        let innermost = innermostAtLine[line]
        if innermost == Int.min { return nil }
        if innermost >= 0 { return closerOfOpener[innermost] }
        let closer = closerOfBase[-innermost - 1]
        return closer >= 0 ? closer : nil
    }
}
