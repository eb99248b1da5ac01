/// A small TOML 1.0 parser that keeps the source position of every key and value.
public enum TOMLParser {
    /// Parses `text`. Never throws: syntax errors and duplicates are returned in `problems`,
    /// together with as much of the document as could be read.
    ///
    /// Positions are 1-based; columns count Unicode scalars. After a syntax error the parser skips
    /// to the next line (or past the broken multi-line construct) and goes on, so that one run
    /// reports every problem of a file. Problems are sorted by position.
    public static func parse(_ text: String) -> TOMLDocument {
        _TOMLParserEngine(text).run()
    }
}

// MARK: - Internal model

/// A parse failure that aborts the construct being read, with where to resume.
private struct _Failure: Error {
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

/// A table while the document is being built: insertion order + lookup, and how it was created.
private final class _MutableTable {
    enum Kind {
        case root
        /// Created as an intermediate of a `[a.b]` header; may still be defined by its own header.
        case implicit
        /// Defined by a `[header]` or `[[header]]`.
        case header
        /// Created by a dotted key (`a.b = 1`).
        case dotted
        /// The table of an inline table being built.
        case inline
        /// Receives the keys under a broken or duplicate header; never part of the document.
        case discarded
    }

    var kind: Kind
    var location: SourceLocation
    var order: [String] = []
    var entries: [String: _MutableEntry] = [:]

    init(kind: Kind, location: SourceLocation) {
        self.kind = kind
        self.location = location
    }

    func add(_ key: String, at keyLocation: SourceLocation, _ value: _MutableValue) {
        order.append(key)
        entries[key] = _MutableEntry(keyLocation: keyLocation, value: value)
    }

    func freeze() -> TOMLTable {
        var result = TOMLTable(location: location)
        result.entries.reserveCapacity(order.count)
        for key in order {
            let entry = entries[key]!
            result.entries.append(TOMLEntry(key: key, keyLocation: entry.keyLocation, node: entry.value.freeze()))
        }
        return result
    }
}

private final class _MutableEntry {
    var keyLocation: SourceLocation
    var value: _MutableValue

    init(keyLocation: SourceLocation, value: _MutableValue) {
        self.keyLocation = keyLocation
        self.value = value
    }
}

private enum _MutableValue {
    /// A complete value: scalar, static array or inline table (which cannot be extended).
    case value(TOMLNode)
    /// A table that headers or dotted keys may still extend.
    case table(_MutableTable)
    /// An array of tables (`[[x]]`).
    case tableArray(_TableArray)

    func freeze() -> TOMLNode {
        switch self {
        case .value(let node):
            return node
        case .table(let table):
            return TOMLNode(.table(table.freeze()), at: table.location)
        case .tableArray(let array):
            return TOMLNode(.array(array.tables.map { TOMLNode(.table($0.freeze()), at: $0.location) }), at: array.location)
        }
    }
}

/// The tables of a `[[x]]` array (a class, so that appending does not copy), and its first header.
private final class _TableArray {
    var tables: [_MutableTable]
    let location: SourceLocation

    init(_ first: _MutableTable, location: SourceLocation) {
        tables = [first]
        self.location = location
    }
}

/// One segment of a (dotted) key.
private struct _KeySegment {
    var name: String
    /// Index of its first character (the opening quote for quoted keys).
    var index: Int
}

/// Builds a string from scalars through UTF-8 (much faster than appending to a `UnicodeScalarView`).
private struct _StringBuilder {
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

// MARK: - Character classes

private enum _C {
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
}

// MARK: - Value tokens (numbers, booleans, date-times)

private enum _Token {
    enum Result {
        case value(TOMLValue)
        case invalid(String)
    }

    static let invalidValue =
        "invalid value: expected a string, number, boolean, array or inline table; strings need quotes"

    static func classify(_ token: ArraySlice<Unicode.Scalar>) -> Result {
        let v = token.map(\.value)
        var text = String()
        text.unicodeScalars.append(contentsOf: token)
        switch text {
        case "true": return .value(.boolean(true))
        case "false": return .value(.boolean(false))
        case "inf", "+inf": return .value(.float(.infinity))
        case "-inf": return .value(.float(-.infinity))
        case "nan", "+nan", "-nan": return .value(.float(.nan))
        default: break
        }
        if v.count >= 5 && v[0..<4].allSatisfy(_C.isDigit) && v[4] == _C.minus {
            return isValidDateTime(v) ? .value(.datetime(text)) : .invalid("invalid date-time '\(text)'")
        }
        if v.count >= 3 && _C.isDigit(v[0]) && _C.isDigit(v[1]) && v[2] == _C.colon {
            return isValidDateTime(v) ? .value(.datetime(text)) : .invalid("invalid time '\(text)'")
        }
        if v.count >= 2 && v[0] == 0x30 && (v[1] == 0x78 || v[1] == 0x6F || v[1] == 0x62) {
            return radixInteger(v, text: text)
        }
        return decimal(v, text: text)
    }

    /// Digits with single underscores between them; at least one digit.
    static func scanDigits(_ v: [UInt32], _ k: inout Int, _ isDigit: (UInt32) -> Bool) -> Bool {
        guard k < v.count, isDigit(v[k]) else { return false }
        k += 1
        while k < v.count {
            if isDigit(v[k]) {
                k += 1
            } else if v[k] == _C.underscore && k + 1 < v.count && isDigit(v[k + 1]) {
                k += 2
            } else {
                break
            }
        }
        return true
    }

    static func outOfRange(_ text: String) -> Result {
        .invalid("integer '\(text)' is out of range for a 64-bit integer")
    }

    static func radixInteger(_ v: [UInt32], text: String) -> Result {
        let radix: Int64
        let isDigit: (UInt32) -> Bool
        switch v[1] {
        case 0x78: radix = 16; isDigit = _C.isHex
        case 0x6F: radix = 8; isDigit = _C.isOctal
        default: radix = 2; isDigit = _C.isBinary
        }
        var k = 2
        guard scanDigits(v, &k, isDigit), k == v.count else { return .invalid(invalidValue) }
        var value: Int64 = 0
        for c in v[2...] where c != _C.underscore {
            let (m, o1) = value.multipliedReportingOverflow(by: radix)
            let (a, o2) = m.addingReportingOverflow(Int64(_C.hexValue(c)))
            if o1 || o2 { return outOfRange(text) }
            value = a
        }
        return .value(.integer(value))
    }

    static func decimal(_ v: [UInt32], text: String) -> Result {
        var k = 0
        if k < v.count && (v[k] == _C.plus || v[k] == _C.minus) { k += 1 }
        let intStart = k
        guard scanDigits(v, &k, _C.isDigit) else { return .invalid(invalidValue) }
        let leadingZero = v[intStart] == 0x30 && k - intStart > 1
        var isFloat = false
        if k < v.count && v[k] == _C.dot {
            k += 1
            guard scanDigits(v, &k, _C.isDigit) else { return .invalid(invalidValue) }
            isFloat = true
        }
        if k < v.count && (v[k] == 0x65 || v[k] == 0x45) {
            k += 1
            if k < v.count && (v[k] == _C.plus || v[k] == _C.minus) { k += 1 }
            guard scanDigits(v, &k, _C.isDigit) else { return .invalid(invalidValue) }
            isFloat = true
        }
        guard k == v.count else { return .invalid(invalidValue) }
        if leadingZero {
            return .invalid("invalid number '\(text)': leading zeros are not allowed")
        }
        let clean = String(text.unicodeScalars.filter { $0 != "_" })
        if isFloat {
            guard let d = Double(clean), d.isFinite else {
                return .invalid("float '\(text)' is out of range")
            }
            return .value(.float(d))
        }
        guard let i = Int64(clean) else { return outOfRange(text) }
        return .value(.integer(i))
    }

    static func isValidDateTime(_ v: [UInt32]) -> Bool {
        func digits(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= v.count else { return nil }
            var n = 0
            for k in from..<(from + count) {
                guard _C.isDigit(v[k]) else { return nil }
                n = n * 10 + Int(v[k] - 0x30)
            }
            return n
        }
        var k = 0
        var hasDate = false
        if v.count >= 5 && v[4] == _C.minus {
            guard let year = digits(0, 4), v.count >= 10, v[4] == _C.minus, let month = digits(5, 2),
                v[7] == _C.minus, let day = digits(8, 2)
            else { return false }
            guard (1...12).contains(month) else { return false }
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
            let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
            guard (1...days).contains(day) else { return false }
            k = 10
            hasDate = true
            if k == v.count { return true }
            guard v[k] == 0x54 || v[k] == 0x74 || v[k] == _C.space else { return false }
            k += 1
        }
        guard let hour = digits(k, 2), k + 2 < v.count, v[k + 2] == _C.colon, let minute = digits(k + 3, 2),
            k + 5 < v.count, v[k + 5] == _C.colon, let second = digits(k + 6, 2)
        else { return false }
        guard hour <= 23, minute <= 59, second <= 60 else { return false }
        k += 8
        if k < v.count && v[k] == _C.dot {
            k += 1
            guard k < v.count, _C.isDigit(v[k]) else { return false }
            while k < v.count && _C.isDigit(v[k]) { k += 1 }
        }
        if k == v.count { return true }
        guard hasDate else { return false }
        if v[k] == 0x5A || v[k] == 0x7A { return k + 1 == v.count }
        guard v[k] == _C.plus || v[k] == _C.minus, k + 6 == v.count, let oh = digits(k + 1, 2),
            v[k + 3] == _C.colon, let om = digits(k + 4, 2)
        else { return false }
        return oh <= 23 && om <= 59
    }
}

// MARK: - Parser

private final class _TOMLParserEngine {
    private let s: [Unicode.Scalar]
    private let n: Int
    private var i = 0
    private var lineStarts: [Int] = [0]
    private var problems: [TOMLProblem] = []
    private let root = _MutableTable(kind: .root, location: SourceLocation(line: 1, column: 1))

    init(_ text: String) {
        s = Array(text.unicodeScalars)
        n = s.count
        for k in 0..<n where s[k] == "\n" {
            lineStarts.append(k + 1)
        }
    }

    func run() -> TOMLDocument {
        if ch(0) == _C.bom {
            // A byte order mark is invisible in editors: columns of line 1 do not count it.
            i = 1
            lineStarts[0] = 1
        }
        var current = root
        while i < n {
            skipWS()
            guard i < n else { break }
            if isNewline(i) {
                i += newlineLength(i)
                continue
            }
            let c = ch(i)
            if c == _C.hash {
                skipComment()
            } else if c == _C.lbracket {
                current = headerStatement()
            } else {
                keyValueStatement(into: current)
            }
        }
        return TOMLDocument(root: root.freeze(), problems: sortedProblems())
    }

    // MARK: Positions and characters

    private func ch(_ k: Int) -> UInt32 { k >= 0 && k < n ? s[k].value : _C.eof }

    private func location(_ index: Int) -> SourceLocation {
        var lo = 0
        var hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= index { lo = mid } else { hi = mid - 1 }
        }
        return SourceLocation(line: lo + 1, column: index - lineStarts[lo] + 1)
    }

    private func isNewline(_ k: Int) -> Bool {
        let c = ch(k)
        return c == _C.lf || (c == _C.cr && ch(k + 1) == _C.lf)
    }

    private func newlineLength(_ k: Int) -> Int { ch(k) == _C.cr ? 2 : 1 }

    private func isEOL(_ k: Int) -> Bool { k >= n || isNewline(k) }

    private func skipWS() {
        while _C.isWS(ch(i)) { i += 1 }
    }

    private func text(_ range: Range<Int>) -> String {
        var builder = _StringBuilder()
        builder.bytes.reserveCapacity(range.count)
        for scalar in s[range] { builder.append(scalar) }
        return builder.string
    }

    private func describe(_ k: Int) -> String {
        if k >= n { return "end of file" }
        if isNewline(k) { return "end of line" }
        let c = ch(k)
        if _C.isControl(c) { return "control character \(Self.codePoint(c))" }
        return "'\(s[k])'"
    }

    /// `'@'`, or `U+000D` for control characters.
    private func characterName(_ k: Int) -> String {
        let c = ch(k)
        return _C.isControl(c) ? Self.codePoint(c) : "'\(s[k])'"
    }

    private static func codePoint(_ c: UInt32) -> String {
        let hex = String(c, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }

    // MARK: Problems

    private func report(_ message: String, at index: Int) {
        problems.append(TOMLProblem(location: location(index), message: message))
    }

    private func report(_ message: String, at location: SourceLocation) {
        problems.append(TOMLProblem(location: location, message: message))
    }

    private func fail(_ message: String, at index: Int, resume: _Failure.Resume = .nextLine) -> _Failure {
        _Failure(problem: TOMLProblem(location: location(index), message: message), resume: resume)
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

    /// Applies a failure at statement level: reports it and moves to where parsing resumes.
    private func recover(_ failure: _Failure) {
        if let problem = failure.problem { problems.append(problem) }
        switch failure.resume {
        case .nextLine:
            skipToNextLine()
        case .at(let k), .statement(let k):
            i = k
        case .endOfFile:
            i = n
        }
    }

    private func skipToNextLine() {
        while i < n && !isNewline(i) { i += 1 }
        if i < n { i += newlineLength(i) }
    }

    /// `i` is at `#`: skips the comment up to (not including) the end of the line.
    private func skipComment() {
        i += 1
        while !isEOL(i) {
            let c = ch(i)
            if _C.isControl(c) {
                report("control character \(Self.codePoint(c)) is not allowed in a comment", at: i)
            }
            i += 1
        }
    }

    private func expectEndOfLine(after what: String) throws(_Failure) {
        skipWS()
        if ch(i) == _C.hash { skipComment() }
        if i >= n { return }
        if isNewline(i) {
            i += newlineLength(i)
            return
        }
        throw fail("expected end of line after \(what)", at: i)
    }

    // MARK: Keys

    private static func display(_ name: String) -> String {
        if !name.isEmpty && name.unicodeScalars.allSatisfy({ _C.isBare($0.value) }) { return name }
        var quoted = "\""
        for scalar in name.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    private static func display(_ key: ArraySlice<_KeySegment>) -> String {
        key.map { display($0.name) }.joined(separator: ".")
    }

    private static func display(_ key: [_KeySegment]) -> String { display(key[...]) }

    /// Parses a possibly dotted key at `i` (whitespace around dots allowed).
    private func parseKey() throws(_Failure) -> [_KeySegment] {
        var segments: [_KeySegment] = []
        while true {
            skipWS()
            let start = i
            let c = ch(i)
            if _C.isBare(c) {
                while _C.isBare(ch(i)) { i += 1 }
                segments.append(_KeySegment(name: text(start..<i), index: start))
            } else if c == _C.quote || c == _C.apostrophe {
                if ch(i + 1) == c && ch(i + 2) == c {
                    throw fail("multi-line strings cannot be used as keys", at: start)
                }
                let name = c == _C.quote ? try parseBasicString() : try parseLiteralString()
                segments.append(_KeySegment(name: name, index: start))
            } else if segments.isEmpty {
                throw fail("expected a key, found \(describe(i))", at: i)
            } else {
                throw fail("expected a key after '.', found \(describe(i))", at: i)
            }
            let save = i
            skipWS()
            if ch(i) == _C.dot {
                i += 1
                continue
            }
            i = save
            return segments
        }
    }

    // MARK: Statements

    private func keyValueStatement(into table: _MutableTable) {
        let c = ch(i)
        guard _C.isBare(c) || c == _C.quote || c == _C.apostrophe else {
            if c == _C.equals {
                recover(fail("missing key before '='", at: i))
            } else {
                recover(fail("invalid character \(characterName(i)): expected a key, a table header or a comment", at: i))
            }
            return
        }
        do throws(_Failure) {
            let key = try parseKeyValue()
            insert(key.key, key.value, into: table)
            try expectEndOfLine(after: "value")
        } catch {
            if case .at(let k) = error.resume {
                // A broken construct whose end we found: check the rest of its line.
                if let problem = error.problem { problems.append(problem) }
                i = k
                do throws(_Failure) {
                    try expectEndOfLine(after: "value")
                } catch {
                    recover(error)
                }
            } else {
                recover(error)
            }
        }
    }

    /// `key = value`, in a statement or an inline table.
    private func parseKeyValue() throws(_Failure) -> (key: [_KeySegment], value: TOMLNode) {
        let key = try parseKey()
        let afterKey = i
        skipWS()
        guard ch(i) == _C.equals else {
            let c = ch(i)
            if afterKey == i && !isEOL(i) && c != _C.quote && c != _C.apostrophe && c != _C.hash
                && c != _C.rbrace && c != _C.comma
            {
                throw fail(
                    "invalid character \(characterName(i)) in key '\(Self.display(key))'; bare keys may only contain A-Z a-z 0-9 _ -",
                    at: i)
            }
            throw fail("expected '=' after key '\(Self.display(key))'", at: i)
        }
        i += 1
        skipWS()
        let c = ch(i)
        if isEOL(i) || c == _C.hash || c == _C.comma || c == _C.rbrace {
            throw fail("missing value for key '\(Self.display(key))'", at: i)
        }
        let value = try parseValue()
        return (key, value)
    }

    /// `[header]` or `[[header]]`: returns the table that the following keys go into.
    private func headerStatement() -> _MutableTable {
        let open = i
        do throws(_Failure) {
            i += 1
            let isArray = ch(i) == _C.lbracket
            if isArray { i += 1 }
            skipWS()
            if ch(i) == _C.rbracket {
                throw fail(isArray ? "empty array of tables header" : "empty table header", at: open)
            }
            let key = try parseKey()
            skipWS()
            let closing = isArray ? "expected ']]' to close the array of tables header" : "expected ']' to close the table header"
            guard ch(i) == _C.rbracket else { throw fail(closing, at: i) }
            i += 1
            if isArray {
                guard ch(i) == _C.rbracket else { throw fail(closing, at: i) }
                i += 1
            }
            let table = define(key, header: open, isArray: isArray)
            do throws(_Failure) {
                try expectEndOfLine(after: "table header")
            } catch {
                recover(error)
            }
            return table
        } catch {
            recover(error)
            return _MutableTable(kind: .discarded, location: location(open))
        }
    }

    private static func article(_ node: TOMLNode) -> String {
        switch node.value {
        case .integer: "an integer"
        case .array: "an array"
        case .table: "an inline table"
        default: "a \(node.value.typeName)"
        }
    }

    /// Why `name` (holding `node`) cannot be used as a table.
    private static func valueConflict(_ name: String, _ node: TOMLNode) -> String {
        if case .table = node.value { return "'\(name)' is an inline table, which cannot be extended" }
        return "'\(name)' is already defined as \(article(node))"
    }

    /// Resolves a header: creates/extends tables, reports conflicts, returns where its keys go.
    private func define(_ key: [_KeySegment], header open: Int, isArray: Bool) -> _MutableTable {
        let headerLocation = location(open)
        let discarded = _MutableTable(kind: .discarded, location: headerLocation)
        var fullName: String { Self.display(key) }
        let what = isArray ? "array of tables" : "table"
        var table = root
        for (k, segment) in key.dropLast().enumerated() {
            let segmentLocation = location(segment.index)
            if let entry = table.entries[segment.name] {
                switch entry.value {
                case .table(let sub):
                    table = sub
                case .tableArray(let array):
                    table = array.tables[array.tables.count - 1]
                case .value(let node):
                    let name = Self.display(key[...k])
                    report("cannot define \(what) '\(fullName)': \(Self.valueConflict(name, node))", at: segmentLocation)
                    return discarded
                }
            } else {
                let sub = _MutableTable(kind: .implicit, location: segmentLocation)
                table.add(segment.name, at: segmentLocation, .table(sub))
                table = sub
            }
        }
        let last = key[key.count - 1]
        let lastLocation = location(last.index)
        guard let entry = table.entries[last.name] else {
            let new = _MutableTable(kind: .header, location: headerLocation)
            table.add(last.name, at: lastLocation, isArray ? .tableArray(_TableArray(new, location: headerLocation)) : .table(new))
            return new
        }
        switch (entry.value, isArray) {
        case (.tableArray(let array), true):
            let new = _MutableTable(kind: .header, location: headerLocation)
            array.tables.append(new)
            return new
        case (.table(let sub), false):
            switch sub.kind {
            case .implicit:
                sub.kind = .header
                sub.location = headerLocation
                entry.keyLocation = lastLocation
                return sub
            case .dotted:
                report("duplicate table '\(fullName)': it is already defined by dotted keys", at: lastLocation)
            default:
                report("duplicate table '\(fullName)'", at: lastLocation)
            }
        case (.table, true):
            report("cannot define array of tables '\(fullName)': it is already defined as a table", at: lastLocation)
        case (.tableArray, false):
            report("cannot define table '\(fullName)': it is already defined as an array of tables", at: lastLocation)
        case (.value(let node), _):
            if isArray, case .array = node.value {
                report("cannot append to static array '\(fullName)' with [[\(fullName)]]", at: lastLocation)
            } else if case .table = node.value {
                report("cannot extend inline table '\(fullName)'", at: lastLocation)
            } else {
                report("cannot define \(what) '\(fullName)': it is already defined as \(Self.article(node))", at: lastLocation)
            }
        }
        return discarded
    }

    /// Inserts `key = node` into `table`, creating tables for dotted keys; reports conflicts.
    private func insert(_ key: [_KeySegment], _ node: TOMLNode, into start: _MutableTable) {
        var table = start
        var fullName: String { Self.display(key) }
        for (k, segment) in key.dropLast().enumerated() {
            let segmentLocation = location(segment.index)
            guard let entry = table.entries[segment.name] else {
                let sub = _MutableTable(kind: .dotted, location: segmentLocation)
                table.add(segment.name, at: segmentLocation, .table(sub))
                table = sub
                continue
            }
            let name = Self.display(key[...k])
            switch entry.value {
            case .table(let sub):
                switch sub.kind {
                case .dotted, .inline:
                    table = sub
                case .implicit:
                    sub.kind = .dotted
                    table = sub
                case .header, .root, .discarded:
                    report(
                        "cannot define '\(fullName)': table '\(name)' is defined by a table header and cannot be extended with dotted keys",
                        at: segmentLocation)
                    return
                }
            case .tableArray:
                report("cannot define '\(fullName)': '\(name)' is an array of tables", at: segmentLocation)
                return
            case .value(let existing):
                if case .table = existing.value {
                    report("cannot extend inline table '\(name)'", at: segmentLocation)
                } else {
                    report("cannot define '\(fullName)': \(Self.valueConflict(name, existing))", at: segmentLocation)
                }
                return
            }
        }
        let last = key[key.count - 1]
        if table.entries[last.name] != nil {
            report("duplicate key '\(fullName)'", at: last.index)
            return
        }
        table.add(last.name, at: location(last.index), .value(node))
    }

    // MARK: Values

    private func parseValue() throws(_Failure) -> TOMLNode {
        let start = i
        let startLocation = location(start)
        let c = ch(i)
        switch c {
        case _C.quote:
            let value =
                ch(i + 1) == _C.quote && ch(i + 2) == _C.quote
                ? try parseMultilineString(literal: false) : try parseBasicString(isValue: true)
            return TOMLNode(.string(value), at: startLocation)
        case _C.apostrophe:
            let value =
                ch(i + 1) == _C.apostrophe && ch(i + 2) == _C.apostrophe
                ? try parseMultilineString(literal: true) : try parseLiteralString(isValue: true)
            return TOMLNode(.string(value), at: startLocation)
        case _C.lbracket:
            return try parseArray()
        case _C.lbrace:
            return try parseInlineTable()
        default:
            while !_C.endsToken(ch(i)) { i += 1 }
            if i == start { throw fail(_Token.invalidValue, at: start) }
            // A date and a time separated by a space: `1979-05-27 07:32:00Z`.
            if i - start == 10 && ch(start + 4) == _C.minus && ch(start + 7) == _C.minus && ch(i) == _C.space
                && _C.isDigit(ch(i + 1)) && _C.isDigit(ch(i + 2)) && ch(i + 3) == _C.colon
            {
                i += 1
                while !_C.endsToken(ch(i)) { i += 1 }
            }
            switch _Token.classify(s[start..<i]) {
            case .value(let value):
                return TOMLNode(value, at: startLocation)
            case .invalid(let message):
                throw fail(message, at: start)
            }
        }
    }

    private func unterminatedString(_ open: Int, literal: Bool, isValue: Bool) -> _Failure {
        let q = literal ? "'" : "\""
        if i >= n {
            return fail("unterminated string: missing closing \(q)", at: open)
        }
        var resume = _Failure.Resume.nextLine
        if isValue, let end = continuedStringEnd(from: i, quote: literal ? _C.apostrophe : _C.quote) {
            resume = .at(end)
        }
        return fail(
            "unterminated string: missing closing \(q) before end of line (use \(q)\(q)\(q) for multi-line strings)",
            at: open, resume: resume)
    }

    /// A single-line string hit the end of line at `k`. If a following line (that is not a statement)
    /// closes it, e.g. `x = "abc` + `def"`, returns the index after that closing quote, so that the
    /// continuation is not parsed as a (broken) statement.
    private func continuedStringEnd(from k: Int, quote: UInt32) -> Int? {
        var j = k
        for _ in 0..<20 {
            guard isNewline(j) else { return nil }
            j += newlineLength(j)
            var m = j
            while _C.isWS(ch(m)) { m += 1 }
            if looksLikeKeyValue(m) || looksLikeHeader(m) { return nil }
            while !isEOL(j) {
                if ch(j) == quote {
                    var after = j + 1
                    while _C.isWS(ch(after)) { after += 1 }
                    let c = ch(after)
                    let ends = isEOL(after) || c == _C.hash || c == _C.comma || c == _C.rbracket || c == _C.rbrace
                    return ends ? j + 1 : nil
                }
                if quote == _C.quote && ch(j) == _C.backslash && !isEOL(j + 1) { j += 1 }
                j += 1
            }
        }
        return nil
    }

    /// `"..."` at `i`.
    private func parseBasicString(isValue: Bool = false) throws(_Failure) -> String {
        let open = i
        i += 1
        var out = _StringBuilder()
        while true {
            if isEOL(i) { throw unterminatedString(open, literal: false, isValue: isValue) }
            let c = ch(i)
            if c == _C.quote {
                i += 1
                return out.string
            }
            if c == _C.backslash {
                parseEscape(into: &out)
            } else {
                if _C.isControl(c) { reportControlCharacter(at: i) } else { out.append(s[i]) }
                i += 1
            }
        }
    }

    /// `'...'` at `i`.
    private func parseLiteralString(isValue: Bool = false) throws(_Failure) -> String {
        let open = i
        i += 1
        var out = _StringBuilder()
        while true {
            if isEOL(i) { throw unterminatedString(open, literal: true, isValue: isValue) }
            let c = ch(i)
            if c == _C.apostrophe {
                i += 1
                return out.string
            }
            if _C.isControl(c) { reportControlCharacter(at: i) } else { out.append(s[i]) }
            i += 1
        }
    }

    private func reportControlCharacter(at k: Int) {
        report(
            "control character \(Self.codePoint(ch(k))) is not allowed in a string; use an escape sequence",
            at: k)
    }

    /// `"""..."""` or `'''...'''` at `i`.
    private func parseMultilineString(literal: Bool) throws(_Failure) -> String {
        let open = i
        let delimiter = literal ? _C.apostrophe : _C.quote
        i += 3
        if isNewline(i) { i += newlineLength(i) }
        var out = _StringBuilder()
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
                    for _ in 0..<extra { out.append(s[i]) }
                    i += 3 + extra
                    return out.string
                }
                for _ in 0..<run { out.append(s[i]) }
                i += run
                continue
            }
            if isNewline(i) {
                out.append("\n")
                i += newlineLength(i)
                continue
            }
            if c == _C.backslash && !literal {
                // A line-ending backslash trims the newline and all whitespace that follows.
                var k = i + 1
                while _C.isWS(ch(k)) { k += 1 }
                if isNewline(k) {
                    i = k
                    while _C.isWS(ch(i)) || isNewline(i) { i += isNewline(i) ? newlineLength(i) : 1 }
                } else {
                    parseEscape(into: &out)
                }
                continue
            }
            if _C.isControl(c) { reportControlCharacter(at: i) } else { out.append(s[i]) }
            i += 1
        }
    }

    /// `i` is at a backslash in a basic string. Invalid escapes are reported (not fatal).
    private func parseEscape(into out: inout _StringBuilder) {
        let backslash = i
        i += 1
        let c = ch(i)
        switch c {
        case 0x62: out.append("\u{08}"); i += 1  // b
        case 0x74: out.append("\t"); i += 1  // t
        case 0x6E: out.append("\n"); i += 1  // n
        case 0x66: out.append("\u{0C}"); i += 1  // f
        case 0x72: out.append("\r"); i += 1  // r
        case _C.quote: out.append("\""); i += 1
        case _C.backslash: out.append("\\"); i += 1
        case 0x75, 0x55:  // u, U
            let length = c == 0x75 ? 4 : 8
            i += 1
            var value: UInt32 = 0
            var count = 0
            while count < length && _C.isHex(ch(i)) {
                value = value &* 16 &+ _C.hexValue(ch(i))
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
            let shown = _C.isControl(c) ? Self.codePoint(c) : "\\\(s[i])"
            report("invalid escape sequence '\(shown)' in string", at: backslash)
            i += 1
        }
    }

    // MARK: Arrays

    /// Skips whitespace, newlines and comments between array elements.
    private func skipArrayTrivia() {
        while true {
            skipWS()
            if isNewline(i) {
                i += newlineLength(i)
            } else if ch(i) == _C.hash {
                skipComment()
            } else {
                return
            }
        }
    }

    private func parseArray() throws(_Failure) -> TOMLNode {
        let open = i
        let openLocation = location(open)
        i += 1
        var elements: [TOMLNode] = []
        func unterminated(resume: _Failure.Resume) -> _Failure {
            fail("unterminated array: missing ']'", at: open, resume: resume)
        }
        /// A statement (`[header]`, or `key =` when no `]` closes the array before the next header)
        /// starting a line inside the array means a missing `]`.
        func checkStatement() throws(_Failure) {
            guard isFirstOnLine(i) else { return }
            if looksLikeHeader(i) || (looksLikeKeyValue(i) && !arrayIsClosedLater(from: i)) {
                throw unterminated(resume: .statement(lineStart(i)))
            }
        }
        while true {
            skipArrayTrivia()
            if i >= n { throw unterminated(resume: .endOfFile) }
            if ch(i) == _C.rbracket {
                i += 1
                return TOMLNode(.array(elements), at: openLocation)
            }
            try checkStatement()
            let elementStart = i
            do throws(_Failure) {
                elements.append(try parseValue())
            } catch {
                switch error.resume {
                case .statement, .endOfFile:
                    throw error
                case .nextLine:
                    if let problem = error.problem { problems.append(problem) }
                    i = skipElementRest(from: elementStart)
                    if ch(i) == _C.comma { i += 1 }
                    continue
                case .at(let k):
                    if let problem = error.problem { problems.append(problem) }
                    i = k
                }
            }
            // After an element: ',' or ']'.
            skipArrayTrivia()
            if i >= n { throw unterminated(resume: .endOfFile) }
            switch ch(i) {
            case _C.comma:
                i += 1
            case _C.rbracket:
                i += 1
                return TOMLNode(.array(elements), at: openLocation)
            case _C.rbrace:
                throw fail("expected ',' or ']' after array element", at: i)
            default:
                try checkStatement()
                report("expected ',' or ']' after array element", at: i)
                i = skipElementRest(from: i)
                if ch(i) == _C.comma { i += 1 }
            }
        }
    }

    /// Whether a `]` closes the current array after `k`, before the next table header or the end of file.
    private func arrayIsClosedLater(from k: Int) -> Bool {
        var j = k
        var stack: [UInt32] = []
        while j < n {
            let c = ch(j)
            switch c {
            case _C.quote, _C.apostrophe:
                j = skipQuoted(j)
                continue
            case _C.hash:
                while !isEOL(j) { j += 1 }
                continue
            case _C.lf:
                j += 1
                var m = j
                while _C.isWS(ch(m)) { m += 1 }
                if looksLikeHeader(m) { return false }
                continue
            case _C.lbracket, _C.lbrace:
                stack.append(c)
            case _C.rbracket, _C.rbrace:
                if stack.isEmpty { return c == _C.rbracket }
                stack.removeLast()
            default:
                break
            }
            j += 1
        }
        return false
    }

    private func isFirstOnLine(_ k: Int) -> Bool {
        var j = k - 1
        while j >= 0 && _C.isWS(ch(j)) { j -= 1 }
        return j < 0 || ch(j) == _C.lf || (j == 0 && ch(j) == _C.bom)
    }

    private func lineStart(_ k: Int) -> Int {
        var j = k
        while j > 0 && ch(j - 1) != _C.lf { j -= 1 }
        return j
    }

    /// Index after a quoted string starting at `k` (single-line strings stop at the end of the line).
    private func skipQuoted(_ k: Int) -> Int {
        let q = ch(k)
        var j = k
        if ch(j + 1) == q && ch(j + 2) == q {
            j += 3
            while j < n {
                if ch(j) == q && ch(j + 1) == q && ch(j + 2) == q {
                    j += 3
                    while ch(j) == q { j += 1 }
                    return j
                }
                if q == _C.quote && ch(j) == _C.backslash { j += 1 }
                j += 1
            }
            return n
        }
        j += 1
        while !isEOL(j) {
            if ch(j) == q { return j + 1 }
            if q == _C.quote && ch(j) == _C.backslash && !isEOL(j + 1) { j += 1 }
            j += 1
        }
        return j
    }

    /// From `k`, the index of the next `,` or `]` at nesting depth 0, a comment, or the end of the line.
    private func skipElementRest(from k: Int) -> Int {
        var j = k
        var stack: [UInt32] = []
        while !isEOL(j) {
            let c = ch(j)
            switch c {
            case _C.quote, _C.apostrophe:
                j = skipQuoted(j)
                continue
            case _C.hash:
                return j
            case _C.lbracket, _C.lbrace:
                stack.append(c)
            case _C.rbracket, _C.rbrace:
                // Pop to the matching opener; an unmatched `}` is skipped, an unmatched `]` ends the array.
                let opener = c == _C.rbracket ? _C.lbracket : _C.lbrace
                if let match = stack.lastIndex(of: opener) {
                    stack.removeSubrange(match...)
                } else if c == _C.rbracket {
                    return j
                }
            case _C.comma:
                if stack.isEmpty { return j }
            default:
                break
            }
            j += 1
        }
        return j
    }

    /// Scans a key (bare/quoted segments with dots) from `k` without reporting anything.
    /// Returns the index after it and the number of segments, or nil.
    private func scanKey(from k: Int) -> (end: Int, segments: Int, quotedOnly: Bool)? {
        var j = k
        var segments = 0
        var quotedOnly = true
        while true {
            while _C.isWS(ch(j)) { j += 1 }
            let c = ch(j)
            if _C.isBare(c) {
                while _C.isBare(ch(j)) { j += 1 }
                quotedOnly = false
            } else if c == _C.quote || c == _C.apostrophe {
                if ch(j + 1) == c && ch(j + 2) == c { return nil }
                let segmentStart = j
                j = skipQuoted(j)
                if ch(j - 1) != c || j - 1 == segmentStart { return nil }
            } else {
                return nil
            }
            segments += 1
            var m = j
            while _C.isWS(ch(m)) { m += 1 }
            if ch(m) == _C.dot {
                j = m + 1
                continue
            }
            return (j, segments, quotedOnly)
        }
    }

    private func looksLikeKeyValue(_ k: Int) -> Bool {
        guard let key = scanKey(from: k) else { return false }
        var j = key.end
        while _C.isWS(ch(j)) { j += 1 }
        return ch(j) == _C.equals && ch(j + 1) != _C.equals
    }

    /// True when the line at `k` is a `[header]` / `[[header]]` and not a plausible array value.
    private func looksLikeHeader(_ k: Int) -> Bool {
        guard ch(k) == _C.lbracket else { return false }
        var j = k + 1
        let isArray = ch(j) == _C.lbracket
        if isArray { j += 1 }
        while _C.isWS(ch(j)) { j += 1 }
        let contentStart = j
        guard let key = scanKey(from: j) else { return false }
        j = key.end
        let contentEnd = j
        while _C.isWS(ch(j)) { j += 1 }
        guard ch(j) == _C.rbracket else { return false }
        j += 1
        if isArray {
            guard ch(j) == _C.rbracket else { return false }
            j += 1
        }
        while _C.isWS(ch(j)) { j += 1 }
        guard isEOL(j) || ch(j) == _C.hash else { return false }
        if key.segments == 1 && key.quotedOnly { return false }  // ["a"] is also a valid array
        if case .value = _Token.classify(s[contentStart..<contentEnd]) { return false }  // [1], [true], [1.5]
        return true
    }

    // MARK: Inline tables

    /// Where to resume after an inline table that is not closed on its line: after its `}`
    /// on a later line, if there is one before the next table header.
    private func findInlineTableEnd(_ open: Int) -> Int? {
        var j = open + 1
        var depth = 1
        while j < n {
            let c = ch(j)
            switch c {
            case _C.quote, _C.apostrophe:
                j = skipQuoted(j)
                continue
            case _C.hash:
                while !isEOL(j) { j += 1 }
                continue
            case _C.lf:
                j += 1
                var m = j
                while _C.isWS(ch(m)) { m += 1 }
                if looksLikeHeader(m) { return nil }
                continue
            case _C.lbracket, _C.lbrace:
                depth += 1
            case _C.rbracket, _C.rbrace:
                depth -= 1
                if depth == 0 { return c == _C.rbrace ? j + 1 : nil }
            default:
                break
            }
            j += 1
        }
        return nil
    }

    private func parseInlineTable() throws(_Failure) -> TOMLNode {
        let open = i
        let openLocation = location(open)
        i += 1
        let table = _MutableTable(kind: .inline, location: openLocation)
        func unterminated() -> _Failure {
            let resume: _Failure.Resume = findInlineTableEnd(open).map { .at($0) } ?? .nextLine
            return fail(
                "unterminated inline table: missing '}' (inline tables must be on a single line)",
                at: open, resume: resume)
        }
        var lastComma: Int?
        while true {
            skipWS()
            if isEOL(i) || ch(i) == _C.hash { throw unterminated() }
            if ch(i) == _C.rbrace {
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
            case _C.comma:
                lastComma = i
                i += 1
            case _C.rbrace:
                i += 1
                return TOMLNode(.table(table.freeze()), at: openLocation)
            default:
                if isEOL(i) || ch(i) == _C.hash { throw unterminated() }
                throw fail("expected ',' or '}' in inline table", at: i)
            }
        }
    }
}
