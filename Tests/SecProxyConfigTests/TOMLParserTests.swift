import XCTest

@testable import SecProxyConfig

final class TOMLParserTests: XCTestCase {
    // MARK: - Helpers

    private func loc(_ line: Int, _ column: Int) -> SourceLocation {
        SourceLocation(line: line, column: column)
    }

    /// Parses `text` and fails the test if there are problems.
    private func parseValid(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> TOMLTable {
        let document = TOMLParser.parse(text)
        XCTAssertEqual(document.problems, [], "unexpected problems", file: file, line: line)
        return document.root
    }

    /// The entry at a dotted path of plain table names (no arrays).
    private func entry(_ table: TOMLTable, _ path: String..., file: StaticString = #filePath, line: UInt = #line)
        -> TOMLEntry?
    {
        var current = table
        for (index, key) in path.enumerated() {
            guard let entry = current[key] else {
                XCTFail("no key '\(key)' in path \(path)", file: file, line: line)
                return nil
            }
            if index == path.count - 1 { return entry }
            guard case .table(let sub) = entry.node.value else {
                XCTFail("'\(key)' is not a table", file: file, line: line)
                return nil
            }
            current = sub
        }
        return nil
    }

    private func value(_ table: TOMLTable, _ path: String..., file: StaticString = #filePath, line: UInt = #line)
        -> TOMLValue?
    {
        var current = table
        for (index, key) in path.enumerated() {
            guard let entry = current[key] else {
                XCTFail("no key '\(key)' in path \(path)", file: file, line: line)
                return nil
            }
            if index == path.count - 1 { return entry.node.value }
            guard case .table(let sub) = entry.node.value else {
                XCTFail("'\(key)' is not a table", file: file, line: line)
                return nil
            }
            current = sub
        }
        return nil
    }

    private func table(_ value: TOMLValue?, file: StaticString = #filePath, line: UInt = #line) -> TOMLTable? {
        guard case .table(let table) = value else {
            XCTFail("not a table: \(String(describing: value))", file: file, line: line)
            return nil
        }
        return table
    }

    private func array(_ value: TOMLValue?, file: StaticString = #filePath, line: UInt = #line) -> [TOMLNode] {
        guard case .array(let nodes) = value else {
            XCTFail("not an array: \(String(describing: value))", file: file, line: line)
            return []
        }
        return nodes
    }

    /// Asserts the exact list of problems: locations and a substring of each message.
    private func assertProblems(
        _ text: String, _ expected: [(line: Int, column: Int, message: String)],
        file: StaticString = #filePath, line: UInt = #line
    ) {
        let problems = TOMLParser.parse(text).problems
        let rendered = problems.map { "\($0.location): \($0.message)" }.joined(separator: "\n")
        XCTAssertEqual(problems.count, expected.count, "problems:\n\(rendered)", file: file, line: line)
        for (problem, want) in zip(problems, expected) {
            XCTAssertEqual(problem.location, loc(want.line, want.column), "problems:\n\(rendered)", file: file, line: line)
            XCTAssertTrue(
                problem.message.contains(want.message), "'\(problem.message)' does not contain '\(want.message)'",
                file: file, line: line)
        }
    }

    // MARK: - Values

    func testEmptyDocument() {
        let root = parseValid("")
        XCTAssertEqual(root.entries.count, 0)
        XCTAssertEqual(root.location, loc(1, 1))
        XCTAssertEqual(parseValid("\n\n  # only a comment\n\t\n").entries.count, 0)
    }

    func testBasicStrings() {
        let root = parseValid(#"""
            a = "hello"
            b = ""
            c = "tab\there \"quoted\" back\\slash"
            d = "\b\f\n\r"
            e = "\u00e9\U0001F600"
            f = "# not a comment" # a comment
            g = "ünïcödé"
            """#)
        XCTAssertEqual(value(root, "a"), .string("hello"))
        XCTAssertEqual(value(root, "b"), .string(""))
        XCTAssertEqual(value(root, "c"), .string("tab\there \"quoted\" back\\slash"))
        XCTAssertEqual(value(root, "d"), .string("\u{08}\u{0C}\n\r"))
        XCTAssertEqual(value(root, "e"), .string("é😀"))
        XCTAssertEqual(value(root, "f"), .string("# not a comment"))
        XCTAssertEqual(value(root, "g"), .string("ünïcödé"))
    }

    func testLiteralStrings() {
        let root = parseValid(#"""
            path = 'C:\Users\nodejs\templates'
            quoted = 'Tom "Dubs" Preston-Werner'
            regex = '<\i\c*\s*>'
            empty = ''
            """#)
        XCTAssertEqual(value(root, "path"), .string(#"C:\Users\nodejs\templates"#))
        XCTAssertEqual(value(root, "quoted"), .string(#"Tom "Dubs" Preston-Werner"#))
        XCTAssertEqual(value(root, "regex"), .string(#"<\i\c*\s*>"#))
        XCTAssertEqual(value(root, "empty"), .string(""))
    }

    func testMultilineBasicStrings() {
        let text = "a = \"\"\"\nRoses are red\nViolets are blue\"\"\"\n"
            + "b = \"\"\"\\\n    The quick brown \\\n\n    fox.\\\n    \"\"\"\n"
            + "c = \"\"\"one \"quoted\" two \"\"quoted\"\" \"\"\\\".\"\"\"\n"
            + "d = \"\"\"ends with quotes\"\"\"\"\"\n"
            + "e = \"\"\"\r\nwindows\r\nline\"\"\"\n"
        let root = parseValid(text)
        XCTAssertEqual(value(root, "a"), .string("Roses are red\nViolets are blue"))
        XCTAssertEqual(value(root, "b"), .string("The quick brown fox."))
        XCTAssertEqual(value(root, "c"), .string("one \"quoted\" two \"\"quoted\"\" \"\"\"."))
        XCTAssertEqual(value(root, "d"), .string("ends with quotes\"\""))
        XCTAssertEqual(value(root, "e"), .string("windows\nline"))
    }

    func testMultilineLiteralStrings() {
        let text = "re = '''I [dw]on't need \\d{2} apples'''\n"
            + "lines = '''\nThe first newline is\ntrimmed in raw strings.\n   All other whitespace\n   is preserved.\n'''\n"
            + "q = ''''That,' she said, 'is still pointless.''''\n"
        let root = parseValid(text)
        XCTAssertEqual(value(root, "re"), .string("I [dw]on't need \\d{2} apples"))
        XCTAssertEqual(
            value(root, "lines"),
            .string("The first newline is\ntrimmed in raw strings.\n   All other whitespace\n   is preserved.\n"))
        XCTAssertEqual(value(root, "q"), .string("'That,' she said, 'is still pointless.'"))
    }

    func testIntegers() {
        let root = parseValid("""
            a = 99
            b = +42
            c = 0
            d = -17
            e = 1_000_000
            f = 0xDEAD_beef
            g = 0o755
            h = 0b1101_0110
            i = 9223372036854775807
            j = -9223372036854775808
            k = +0
            l = -0
            m = 0x7fffffffffffffff
            """)
        XCTAssertEqual(value(root, "a"), .integer(99))
        XCTAssertEqual(value(root, "b"), .integer(42))
        XCTAssertEqual(value(root, "c"), .integer(0))
        XCTAssertEqual(value(root, "d"), .integer(-17))
        XCTAssertEqual(value(root, "e"), .integer(1_000_000))
        XCTAssertEqual(value(root, "f"), .integer(0xDEAD_BEEF))
        XCTAssertEqual(value(root, "g"), .integer(0o755))
        XCTAssertEqual(value(root, "h"), .integer(0b1101_0110))
        XCTAssertEqual(value(root, "i"), .integer(Int64.max))
        XCTAssertEqual(value(root, "j"), .integer(Int64.min))
        XCTAssertEqual(value(root, "k"), .integer(0))
        XCTAssertEqual(value(root, "l"), .integer(0))
        XCTAssertEqual(value(root, "m"), .integer(Int64.max))
    }

    func testFloats() {
        let root = parseValid("""
            a = 1.0
            b = 3.1415
            c = -0.01
            d = 5e+22
            e = 1e06
            f = -2E-2
            g = 6.626e-34
            h = 224_617.445_991_228
            i = inf
            j = +inf
            k = -inf
            l = nan
            m = -nan
            n = 0.0
            """)
        XCTAssertEqual(value(root, "a"), .float(1.0))
        XCTAssertEqual(value(root, "b"), .float(3.1415))
        XCTAssertEqual(value(root, "c"), .float(-0.01))
        XCTAssertEqual(value(root, "d"), .float(5e22))
        XCTAssertEqual(value(root, "e"), .float(1e6))
        XCTAssertEqual(value(root, "f"), .float(-0.02))
        XCTAssertEqual(value(root, "g"), .float(6.626e-34))
        XCTAssertEqual(value(root, "h"), .float(224_617.445_991_228))
        XCTAssertEqual(value(root, "i"), .float(.infinity))
        XCTAssertEqual(value(root, "j"), .float(.infinity))
        XCTAssertEqual(value(root, "k"), .float(-.infinity))
        guard case .float(let l) = value(root, "l"), case .float(let m) = value(root, "m") else {
            return XCTFail("nan is not a float")
        }
        XCTAssertTrue(l.isNaN)
        XCTAssertTrue(m.isNaN)
        XCTAssertEqual(value(root, "n"), .float(0))
    }

    func testBooleans() {
        let root = parseValid("yes = true\nno = false\n")
        XCTAssertEqual(value(root, "yes"), .boolean(true))
        XCTAssertEqual(value(root, "no"), .boolean(false))
    }

    func testDateTimes() {
        let root = parseValid("""
            odt1 = 1979-05-27T07:32:00Z
            odt2 = 1979-05-27T00:32:00-07:00
            odt3 = 1979-05-27T00:32:00.999999+07:00
            odt4 = 1979-05-27 07:32:00Z
            ldt = 1979-05-27T07:32:00
            ld = 1979-05-27
            lt1 = 07:32:00
            lt2 = 00:32:00.999999
            leap = 2024-02-29
            """)
        XCTAssertEqual(value(root, "odt1"), .datetime("1979-05-27T07:32:00Z"))
        XCTAssertEqual(value(root, "odt2"), .datetime("1979-05-27T00:32:00-07:00"))
        XCTAssertEqual(value(root, "odt3"), .datetime("1979-05-27T00:32:00.999999+07:00"))
        XCTAssertEqual(value(root, "odt4"), .datetime("1979-05-27 07:32:00Z"))
        XCTAssertEqual(value(root, "ldt"), .datetime("1979-05-27T07:32:00"))
        XCTAssertEqual(value(root, "ld"), .datetime("1979-05-27"))
        XCTAssertEqual(value(root, "lt1"), .datetime("07:32:00"))
        XCTAssertEqual(value(root, "lt2"), .datetime("00:32:00.999999"))
        XCTAssertEqual(value(root, "leap"), .datetime("2024-02-29"))
    }

    func testArrays() {
        let root = parseValid("""
            ints = [ 1, 2, 3 ]
            empty = []
            nested = [ [ 1, 2 ], ["a", 'b'] ]
            mixed = [ 0.1, "x", true, 1979-05-27, { a = 1 } ]
            trailing = [ 1, 2, ]
            """)
        XCTAssertEqual(array(value(root, "ints")).map(\.value), [.integer(1), .integer(2), .integer(3)])
        XCTAssertEqual(array(value(root, "empty")).count, 0)
        let nested = array(value(root, "nested"))
        XCTAssertEqual(nested.count, 2)
        XCTAssertEqual(array(nested[0].value).map(\.value), [.integer(1), .integer(2)])
        XCTAssertEqual(array(nested[1].value).map(\.value), [.string("a"), .string("b")])
        let mixed = array(value(root, "mixed"))
        XCTAssertEqual(mixed.map(\.value.typeName), ["float", "string", "boolean", "datetime", "table"])
        XCTAssertEqual(array(value(root, "trailing")).map(\.value), [.integer(1), .integer(2)])
    }

    func testMultilineArrayWithComments() {
        let root = parseValid("""
            ports = [  # the ports
              80,      # http
              # a full-line comment
              443,

              8443,    # trailing comma and comment
            ]
            after = 1
            """)
        let ports = array(value(root, "ports"))
        XCTAssertEqual(ports.map(\.value), [.integer(80), .integer(443), .integer(8443)])
        XCTAssertEqual(ports.map(\.location), [loc(2, 3), loc(4, 3), loc(6, 3)])
        XCTAssertEqual(entry(root, "after")?.keyLocation, loc(8, 1))
    }

    func testInlineTables() {
        let root = parseValid(#"""
            name = { first = "Tom", last = "Preston-Werner" }
            point = {x=1,y=2}
            empty = {}
            animal = { type.name = "pug", type.age = 3 }
            nested = { a = { b = [1, 2] } }
            """#)
        let name = table(value(root, "name"))
        XCTAssertEqual(name?.entries.map(\.key), ["first", "last"])
        XCTAssertEqual(name?["last"]?.node.value, .string("Preston-Werner"))
        XCTAssertEqual(name?.location, loc(1, 8))
        XCTAssertEqual(name?["first"]?.keyLocation, loc(1, 10))
        XCTAssertEqual(name?["first"]?.node.location, loc(1, 18))
        XCTAssertEqual(value(root, "point", "y"), .integer(2))
        XCTAssertEqual(table(value(root, "empty"))?.entries.count, 0)
        XCTAssertEqual(value(root, "animal", "type", "name"), .string("pug"))
        XCTAssertEqual(value(root, "animal", "type", "age"), .integer(3))
        XCTAssertEqual(entry(root, "animal", "type")?.keyLocation, loc(4, 12))
        XCTAssertEqual(array(value(root, "nested", "a", "b")).count, 2)
    }

    // MARK: - Keys

    func testBareQuotedAndDottedKeys() {
        let root = parseValid(#"""
            bare_key-1 = 1
            1234 = 2
            "quoted key" = 3
            'literal.key' = 4
            "" = 5
            site."google.com" = 6
            a . b . c = 7
            "\u0041" = 8
            """#)
        XCTAssertEqual(value(root, "bare_key-1"), .integer(1))
        XCTAssertEqual(value(root, "1234"), .integer(2))
        XCTAssertEqual(value(root, "quoted key"), .integer(3))
        XCTAssertEqual(value(root, "literal.key"), .integer(4))
        XCTAssertEqual(value(root, ""), .integer(5))
        XCTAssertEqual(value(root, "site", "google.com"), .integer(6))
        XCTAssertEqual(value(root, "a", "b", "c"), .integer(7))
        XCTAssertEqual(value(root, "A"), .integer(8))
    }

    func testDottedKeysExtendTheSameTable() {
        let root = parseValid("""
            fruit.apple.color = "red"
            fruit.apple.taste.sweet = true
            fruit.orange = 2
            """)
        XCTAssertEqual(root.entries.map(\.key), ["fruit"])
        let fruit = table(value(root, "fruit"))
        XCTAssertEqual(fruit?.entries.map(\.key), ["apple", "orange"])
        XCTAssertEqual(value(root, "fruit", "apple", "taste", "sweet"), .boolean(true))
        // Implicit tables are located at the key segment that created them.
        XCTAssertEqual(entry(root, "fruit")?.keyLocation, loc(1, 1))
        XCTAssertEqual(entry(root, "fruit")?.node.location, loc(1, 1))
        XCTAssertEqual(entry(root, "fruit", "apple")?.keyLocation, loc(1, 7))
        XCTAssertEqual(entry(root, "fruit", "apple", "taste")?.keyLocation, loc(2, 13))
    }

    func testEntriesKeepSourceOrder() {
        let root = parseValid("z = 1\na = 2\nm = 3\n[b]\n[a2]\n")
        XCTAssertEqual(root.entries.map(\.key), ["z", "a", "m", "b", "a2"])
    }

    // MARK: - Positions

    func testKeyAndValuePositions() {
        let root = parseValid("""
            # comment
            listen = "0.0.0.0:8443"
              indented   =   42
            \tquoted."dotted key" = true
            """)
        XCTAssertEqual(entry(root, "listen")?.keyLocation, loc(2, 1))
        XCTAssertEqual(entry(root, "listen")?.node.location, loc(2, 10))
        XCTAssertEqual(entry(root, "indented")?.keyLocation, loc(3, 3))
        XCTAssertEqual(entry(root, "indented")?.node.location, loc(3, 18))
        XCTAssertEqual(entry(root, "quoted", "dotted key")?.keyLocation, loc(4, 9))
        XCTAssertEqual(entry(root, "quoted", "dotted key")?.node.location, loc(4, 24))
        XCTAssertEqual(entry(root, "quoted")?.keyLocation, loc(4, 2))
    }

    func testColumnsCountUnicodeScalars() {
        let root = parseValid("name = \"héllo wörld 😀\"\n"
            + "\"ключ\" = \"значение\" \n"
            + "emoji = [\"😀😀\", 2]\n")
        XCTAssertEqual(entry(root, "ключ")?.node.location, loc(2, 10))
        let elements = array(value(root, "emoji"))
        XCTAssertEqual(elements.map(\.location), [loc(3, 10), loc(3, 16)])
    }

    func testCRLFLineEndings() {
        let root = parseValid("a = 1\r\n[server]\r\nlisten = \"x\" # c\r\nports = [\r\n  1,\r\n  2\r\n]\r\n")
        XCTAssertEqual(entry(root, "server", "listen")?.keyLocation, loc(3, 1))
        XCTAssertEqual(entry(root, "server", "listen")?.node.location, loc(3, 10))
        XCTAssertEqual(array(value(root, "server", "ports")).map(\.location), [loc(5, 3), loc(6, 3)])
    }

    func testTableHeaderPositions() {
        let root = parseValid("""
            top = 1

            [server]
            workers = 4

              [ server.admin ]
              listen = "127.0.0.1:9000"
            ["quoted header"]
            """)
        let server = entry(root, "server")
        XCTAssertEqual(server?.keyLocation, loc(3, 2))
        XCTAssertEqual(server?.node.location, loc(3, 1))
        XCTAssertEqual(table(server?.node.value)?.location, loc(3, 1))
        let admin = entry(root, "server", "admin")
        XCTAssertEqual(admin?.keyLocation, loc(6, 12))
        XCTAssertEqual(table(admin?.node.value)?.location, loc(6, 3))
        XCTAssertEqual(entry(root, "server", "admin", "listen")?.keyLocation, loc(7, 3))
        XCTAssertEqual(entry(root, "quoted header")?.keyLocation, loc(8, 2))
    }

    func testImplicitTableDefinedLater() {
        let root = parseValid("""
            [a.b.c]
            x = 1
            [a]
            y = 2
            """)
        let a = entry(root, "a")
        // Once `[a]` defines the table, its position is that header.
        XCTAssertEqual(a?.keyLocation, loc(3, 2))
        XCTAssertEqual(table(a?.node.value)?.location, loc(3, 1))
        XCTAssertEqual(table(a?.node.value)?.entries.map(\.key), ["b", "y"])
        // `b` was only created implicitly: located at its segment in `[a.b.c]`.
        XCTAssertEqual(entry(root, "a", "b")?.keyLocation, loc(1, 4))
        XCTAssertEqual(entry(root, "a", "b")?.node.location, loc(1, 4))
        XCTAssertEqual(value(root, "a", "b", "c", "x"), .integer(1))
    }

    // MARK: - Arrays of tables

    func testArrayOfTablesNesting() {
        let root = parseValid("""
            [[listener]]
            name = "web"

            [listener.tls]
            cert = "web.pem"

            [[listener.tls.sni]]
            host = "a.example"

            [[listener.tls.sni]]
            host = "b.example"

            [[listener]]
            name = "api"
            [listener.tls]
            cert = "api.pem"
            [[listener.tls.sni]]
            host = "c.example"
            """)
        let listenerEntry = entry(root, "listener")
        XCTAssertEqual(listenerEntry?.keyLocation, loc(1, 3))
        XCTAssertEqual(listenerEntry?.node.location, loc(1, 1))
        let listeners = array(listenerEntry?.node.value)
        XCTAssertEqual(listeners.count, 2)
        XCTAssertEqual(listeners.map(\.location), [loc(1, 1), loc(13, 1)])
        guard listeners.count == 2, let first = table(listeners[0].value), let second = table(listeners[1].value)
        else { return }
        XCTAssertEqual(first.location, loc(1, 1))
        XCTAssertEqual(second.location, loc(13, 1))
        XCTAssertEqual(value(first, "name"), .string("web"))
        XCTAssertEqual(value(first, "tls", "cert"), .string("web.pem"))
        XCTAssertEqual(entry(first, "tls")?.keyLocation, loc(4, 11))
        XCTAssertEqual(table(value(first, "tls"))?.location, loc(4, 1))
        let firstSNI = array(value(first, "tls", "sni"))
        XCTAssertEqual(firstSNI.count, 2)
        XCTAssertEqual(firstSNI.map(\.location), [loc(7, 1), loc(10, 1)])
        XCTAssertEqual(firstSNI.compactMap { table($0.value)?["host"]?.node.value }, [.string("a.example"), .string("b.example")])
        XCTAssertEqual(entry(first, "tls", "sni")?.keyLocation, loc(7, 16))

        XCTAssertEqual(value(second, "name"), .string("api"))
        XCTAssertEqual(value(second, "tls", "cert"), .string("api.pem"))
        let secondSNI = array(value(second, "tls", "sni"))
        XCTAssertEqual(secondSNI.count, 1)
        XCTAssertEqual(secondSNI.first.flatMap { table($0.value) }?.location, loc(17, 1))
        XCTAssertEqual(secondSNI.first.flatMap { table($0.value)?["host"]?.node.value }, .string("c.example"))
    }

    func testArrayOfTablesWithDottedHeader() {
        let root = parseValid("""
            [[a.b]]
            x = 1
            [[a.b]]
            x = 2
            [a]
            y = 3
            """)
        XCTAssertEqual(array(value(root, "a", "b")).count, 2)
        XCTAssertEqual(value(root, "a", "y"), .integer(3))
        XCTAssertEqual(entry(root, "a", "b")?.keyLocation, loc(1, 5))
    }

    func testHeaderMayExtendDottedSubTables() {
        let root = parseValid("""
            [fruit]
            apple.color = "red"
            apple.taste.sweet = true

            [fruit.apple.texture]
            smooth = true
            """)
        XCTAssertEqual(value(root, "fruit", "apple", "texture", "smooth"), .boolean(true))
        XCTAssertEqual(value(root, "fruit", "apple", "color"), .string("red"))
    }

    func testBOMIsSkipped() {
        let root = parseValid("\u{FEFF}a = 1\n")
        // The invisible BOM does not count as a column.
        XCTAssertEqual(entry(root, "a")?.keyLocation, loc(1, 1))
        XCTAssertEqual(entry(root, "a")?.node.location, loc(1, 5))
        assertProblems("\u{FEFF}a = x\n", [(1, 5, "invalid value")])
    }

    // MARK: - Syntax errors

    func testUnterminatedBasicString() {
        assertProblems("a = 1\nname = \"secproxy\nb = 2\n", [(2, 8, "unterminated string")])
        let document = TOMLParser.parse("a = 1\nname = \"secproxy\nb = 2\n")
        XCTAssertEqual(document.root.entries.map(\.key), ["a", "b"])
        assertProblems("name = 'abc", [(1, 8, "unterminated string: missing closing '")])
        assertProblems("name = \"abc", [(1, 8, "unterminated string: missing closing \"")])
    }

    func testNewlineInsideBasicString() {
        assertProblems("x = \"abc\n", [(1, 5, "before end of line")])
        assertProblems("[t]\nk = 'ab\n", [(2, 5, "before end of line")])
    }

    func testUnterminatedMultilineStringReportsOnce() {
        assertProblems(
            "a = 1\nb = \"\"\"\nline\n[server]\nx = oops\n",
            [(2, 5, "unterminated multi-line string: missing closing \"\"\"")])
        assertProblems("b = '''abc", [(1, 5, "unterminated multi-line string: missing closing '''")])
    }

    func testMissingEquals() {
        assertProblems("listen \"0.0.0.0:8443\"\n", [(1, 8, "expected '=' after key 'listen'")])
        assertProblems("listen\n", [(1, 7, "expected '=' after key 'listen'")])
        assertProblems("server.listen 1\n", [(1, 15, "expected '=' after key 'server.listen'")])
        assertProblems("list:en = 1\n", [(1, 5, "invalid character ':' in key 'list'")])
    }

    func testMissingValue() {
        assertProblems("port =\n", [(1, 7, "missing value for key 'port'")])
        assertProblems("port =   # nothing\n", [(1, 10, "missing value for key 'port'")])
        assertProblems("port = ", [(1, 8, "missing value")])
        assertProblems("= 1\n", [(1, 1, "missing key before '='")])
    }

    func testBadValues() {
        let message = "invalid value: expected a string, number, boolean, array or inline table; strings need quotes"
        assertProblems("port = 84x3\n", [(1, 8, message)])
        assertProblems("x = abc\n", [(1, 5, message)])
        assertProblems("[s]\nhost = 127.0.0.1\n", [(2, 8, message)])
        assertProblems("x = True\n", [(1, 5, message)])
        assertProblems("x = 1__000\n", [(1, 5, message)])
        assertProblems("x = 1_\n", [(1, 5, message)])
        assertProblems("x = .5\n", [(1, 5, message)])
        assertProblems("x = 1.\n", [(1, 5, message)])
        assertProblems("x = 0xG1\n", [(1, 5, message)])
        assertProblems("x = +0x10\n", [(1, 5, message)])
        assertProblems("x = @\n", [(1, 5, message)])
        assertProblems("x = 0123\n", [(1, 5, "leading zeros")])
    }

    func testIntegerOverflow() {
        assertProblems("a = 9223372036854775808\n", [(1, 5, "out of range")])
        assertProblems("a = -9223372036854775809\n", [(1, 5, "out of range")])
        assertProblems("a = 0xffffffffffffffff\n", [(1, 5, "out of range")])
        assertProblems("a = 1e400\n", [(1, 5, "out of range")])
    }

    func testInvalidDateTimes() {
        assertProblems("d = 1979-13-27\n", [(1, 5, "invalid date-time '1979-13-27'")])
        assertProblems("d = 2023-02-29\n", [(1, 5, "invalid date-time")])
        assertProblems("d = 1979-05-27T25:00:00\n", [(1, 5, "invalid date-time")])
        assertProblems("d = 1979-05-27T07:32\n", [(1, 5, "invalid date-time")])
        assertProblems("t = 07:32:00Z\n", [(1, 5, "invalid time")])
        assertProblems("d = 1979-05-27T07:32:00+7:00\n", [(1, 5, "invalid date-time")])
    }

    func testGarbageAfterValue() {
        assertProblems("port = 8443 abc\n", [(1, 13, "expected end of line after value")])
        assertProblems("name = \"a\" \"b\"\n", [(1, 12, "expected end of line after value")])
        assertProblems("a = [1, 2] 3\n", [(1, 12, "expected end of line after value")])
        assertProblems("[server] x = 1\n", [(1, 10, "expected end of line after table header")])
        // The value itself is kept.
        let document = TOMLParser.parse("port = 8443 abc\n")
        XCTAssertEqual(document.root["port"]?.node.value, .integer(8443))
    }

    func testInvalidEscapes() {
        assertProblems(#"a = "bad \q escape""#, [(1, 10, "invalid escape sequence '\\q'")])
        assertProblems(#"a = "\x41 and \z""#, [(1, 6, "invalid escape"), (1, 15, "invalid escape")])
        assertProblems(#"a = "\u12G4""#, [(1, 6, "invalid unicode escape")])
        assertProblems(#"a = "\UFFFFFFFF""#, [(1, 6, "not a Unicode scalar value")])
        assertProblems(#"a = "\uD800""#, [(1, 6, "not a Unicode scalar value")])
        assertProblems("a = \"\"\"\nok \\ x\nbad \\e\"\"\"\n", [(2, 4, "invalid escape"), (3, 5, "invalid escape")])
        // Escapes are not processed in literal strings.
        XCTAssertEqual(TOMLParser.parse(#"a = '\q'"#).problems, [])
    }

    func testControlCharacters() {
        assertProblems("a = \"x\u{01}y\"\n", [(1, 7, "control character U+0001")])
        assertProblems("a = 'x\u{7F}'\n", [(1, 7, "control character U+007F")])
        assertProblems("# comment \u{00} here\na = 1\n", [(1, 11, "control character U+0000 is not allowed in a comment")])
        assertProblems("a = \"\"\"\nx\u{1B}\"\"\"\n", [(2, 2, "control character U+001B")])
        assertProblems("a = 1\rb = 2\n", [(1, 6, "expected end of line after value")])
        // A tab is fine.
        XCTAssertEqual(TOMLParser.parse("a = \"x\ty\" # c\tc\n").problems, [])
    }

    func testBadHeaders() {
        assertProblems("[server\nx = 1\n", [(1, 8, "expected ']' to close the table header")])
        assertProblems("[]\n", [(1, 1, "empty table header")])
        assertProblems("[[listener]\n", [(1, 12, "expected ']]'")])
        assertProblems("[[ ]]\n", [(1, 1, "empty array of tables header")])
        assertProblems("[a.]\n", [(1, 4, "expected a key after '.'")])
        assertProblems("[a b]\n", [(1, 4, "expected ']'")])
        assertProblems("[\"\"\"x\"\"\"]\n", [(1, 2, "multi-line strings cannot be used as keys")])
    }

    func testKeysUnderABrokenHeaderAreDropped() {
        let document = TOMLParser.parse("[server\nworkers = 4\nworkers = 5\n[ok]\nx = 1\n")
        XCTAssertEqual(document.problems.map(\.location), [loc(1, 8), loc(3, 1)])
        XCTAssertEqual(document.root.entries.map(\.key), ["ok"])
    }

    func testInvalidStatementStart() {
        assertProblems("@x = 1\ny = 2\n", [(1, 1, "invalid character '@'")])
        assertProblems("a. = 1\n", [(1, 4, "expected a key after '.'")])
        assertProblems("\"\"\"k\"\"\" = 1\n", [(1, 1, "multi-line strings cannot be used as keys")])
    }

    func testInlineTableErrors() {
        assertProblems("t = { a = 1, }\n", [(1, 12, "trailing comma is not allowed in an inline table")])
        assertProblems("t = { a = 1 b = 2 }\n", [(1, 13, "expected ',' or '}' in inline table")])
        assertProblems("t = { a = 1\nb = 2\n", [(1, 5, "unterminated inline table")])
        assertProblems("t = { a = }\n", [(1, 11, "missing value for key 'a'")])
        assertProblems("t = { a = 1, a = 2 }\n", [(1, 14, "duplicate key 'a'")])
        assertProblems("t = { a = 1, a.b = 2 }\n", [(1, 14, "'a' is already defined as an integer")])
        let document = TOMLParser.parse("t = { a = 1\nb = 2\n")
        XCTAssertEqual(document.root.entries.map(\.key), ["b"])
    }

    func testMultilineInlineTableIsOneError() {
        let text = """
            tls = {
              cert = "a.pem",
              key = "a.key",
            }
            after = 1
            """
        assertProblems(text, [(1, 7, "unterminated inline table: missing '}' (inline tables must be on a single line)")])
        XCTAssertEqual(TOMLParser.parse(text).root.entries.map(\.key), ["after"])
    }

    // MARK: - Arrays: errors and recovery

    func testBadArrayElementIsReportedAndArrayContinues() {
        let text = """
            ports = [
              80,
              84x3,
              443,
            ]
            other = 1
            """
        assertProblems(text, [(3, 3, "invalid value")])
        let root = TOMLParser.parse(text).root
        XCTAssertEqual(array(value(root, "ports")).map(\.value), [.integer(80), .integer(443)])
        XCTAssertEqual(value(root, "other"), .integer(1))
    }

    func testMissingCommaInArray() {
        assertProblems("a = [1 2, 3]\nb = 1\n", [(1, 8, "expected ',' or ']' after array element")])
        assertProblems("a = [\n  1\n  2,\n]\n", [(3, 3, "expected ',' or ']'")])
        assertProblems("a = [1, 2 }\nb = 1\n", [(1, 11, "expected ',' or ']'")])
        assertProblems("a = [1,,2]\n", [(1, 8, "invalid value")])
    }

    func testUnterminatedArrayBeforeHeaderIsOneError() {
        let text = """
            ports = [
              80,
              443

            [server]
            workers = 4
            """
        assertProblems(text, [(1, 9, "unterminated array: missing ']'")])
        XCTAssertEqual(value(TOMLParser.parse(text).root, "server", "workers"), .integer(4))
    }

    func testUnterminatedArrayBeforeKeyValueIsOneError() {
        var text = "ports = [ 80, 443\n"
        for index in 0..<50 { text += "key\(index) = \(index)\n" }
        assertProblems(text, [(1, 9, "unterminated array")])
        XCTAssertEqual(TOMLParser.parse(text).root.entries.count, 50)
    }

    func testUnterminatedArrayAtEndOfFile() {
        assertProblems("a = [\n  1,\n  2,\n", [(1, 5, "unterminated array")])
        assertProblems("a = [[1, 2], [3", [(1, 14, "unterminated array")])
    }

    func testNestedArraysThatLookLikeHeadersAreValues() {
        let root = parseValid("""
            a = [
              [1],
              ["x"],
              [true],
              [1.5],
              [[2]],
            ]
            """)
        XCTAssertEqual(array(value(root, "a")).count, 5)
    }

    func testBadStringInMultilineArrayDoesNotCascade() {
        let text = """
            names = [
              "ok",
              "broken,
              "fine",
            ]
            x = 1
            """
        assertProblems(text, [(3, 3, "unterminated string")])
        XCTAssertEqual(array(value(TOMLParser.parse(text).root, "names")).map(\.value), [.string("ok"), .string("fine")])
    }

    func testStringContinuedOnNextLineIsOneError() {
        let text = "motd = \"hello\nworld\"\nafter = 1\n"
        assertProblems(text, [(1, 8, "unterminated string")])
        XCTAssertEqual(TOMLParser.parse(text).root.entries.map(\.key), ["after"])
        // Inside an array the continuation is skipped too, and the array goes on.
        let inArray = "a = [\n  \"x\n  y\",\n  \"z\",\n]\n"
        assertProblems(inArray, [(2, 3, "unterminated string")])
        XCTAssertEqual(array(value(TOMLParser.parse(inArray).root, "a")).map(\.value), [.string("z")])
    }

    func testKeyValueInsideClosedArrayIsNotUnterminated() {
        let text = "k = [\n  \"a\" = 1,\n  2,\n]\nafter = 1\n"
        assertProblems(text, [(2, 7, "expected ',' or ']' after array element")])
        let root = TOMLParser.parse(text).root
        XCTAssertEqual(array(value(root, "k")).map(\.value), [.string("a"), .integer(2)])
        XCTAssertEqual(value(root, "after"), .integer(1))
    }

    func testMismatchedBracketsInElementDoNotCascade() {
        assertProblems("x = [ {a = [1 }, 3 ]\nq = 1\n", [(1, 15, "expected ',' or ']' after array element")])
        let text = "a = [ { x = 1,\n  y = 2 }, 3 ]\nb = 1\n"
        assertProblems(text, [(1, 7, "unterminated inline table")])
        let root = TOMLParser.parse(text).root
        XCTAssertEqual(array(value(root, "a")).map(\.value), [.integer(3)])
        XCTAssertEqual(value(root, "b"), .integer(1))
    }

    func testLargeDocument() {
        var text = "[server]\nworkers = 4\n"
        for index in 0..<2000 {
            text += "[[listener]]\nname = \"l\(index)\"\nports = [\(index), \(index + 1)]\n"
            text += "[listener.tls]\ncert = 'c\(index).pem'\n[[listener.tls.sni]]\nhost = \"h\(index)\"\n"
        }
        let root = parseValid(text)
        let listeners = array(value(root, "listener"))
        XCTAssertEqual(listeners.count, 2000)
        XCTAssertEqual(listeners.last?.location, loc(2 + 1999 * 7 + 1, 1))
        XCTAssertEqual(listeners.last.flatMap { table($0.value)?["name"]?.node.value }, .string("l1999"))
    }

    // MARK: - Duplicates and redefinitions

    func testDuplicateKeyAtSecondOccurrence() {
        let text = """
            [server]
            listen = "a"
            workers = 2
              listen = "b"
            """
        assertProblems(text, [(4, 3, "duplicate key 'listen'")])
        XCTAssertEqual(value(TOMLParser.parse(text).root, "server", "listen"), .string("a"))
    }

    func testDuplicateDottedKey() {
        assertProblems("a.b = 1\na.b = 2\n", [(2, 3, "duplicate key 'a.b'")])
        assertProblems("\"x\" = 1\nx = 2\n", [(2, 1, "duplicate key 'x'")])
    }

    func testDuplicateTable() {
        let text = """
            [server]
            workers = 1
            [admin]
            [server]
            workers = 2
            """
        assertProblems(text, [(4, 2, "duplicate table 'server'")])
        // The first definition is kept; the keys of the duplicate are not merged in.
        XCTAssertEqual(value(TOMLParser.parse(text).root, "server", "workers"), .integer(1))
        assertProblems("[a.b]\n[a.b]\n", [(2, 4, "duplicate table 'a.b'")])
        assertProblems("[a]\nb.c = 1\n[a.b]\n", [(3, 4, "duplicate table 'a.b': it is already defined by dotted keys")])
    }

    func testKeyRedefinedAsTableAndViceVersa() {
        assertProblems("a = 1\n[a]\n", [(2, 2, "cannot define table 'a': it is already defined as an integer")])
        assertProblems("a = 1\n[a.b]\n", [(2, 2, "cannot define table 'a.b': 'a' is already defined as an integer")])
        assertProblems("[a.b]\n[a]\nb = 1\n", [(3, 1, "duplicate key 'b'")])
        assertProblems("a = \"x\"\na.b = 1\n", [(2, 1, "cannot define 'a.b': 'a' is already defined as a string")])
        assertProblems(
            "[x.a]\n[x]\na.b = 1\n",
            [(3, 1, "table 'a' is defined by a table header and cannot be extended with dotted keys")])
    }

    func testExtendingInlineTable() {
        assertProblems("a = { b = 1 }\na.c = 2\n", [(2, 1, "cannot extend inline table 'a'")])
        assertProblems("a = { b = 1 }\n[a]\n", [(2, 2, "cannot extend inline table 'a'")])
        assertProblems("a = { b = 1 }\n[a.c]\n", [(2, 2, "'a' is an inline table, which cannot be extended")])
    }

    func testArrayOfTablesConflicts() {
        assertProblems("a = [1, 2]\n[[a]]\n", [(2, 3, "cannot append to static array 'a' with [[a]]")])
        assertProblems("[a]\n[[a]]\n", [(2, 3, "cannot define array of tables 'a': it is already defined as a table")])
        assertProblems("[[a]]\n[a]\n", [(2, 2, "cannot define table 'a': it is already defined as an array of tables")])
        assertProblems("[[a]]\nb.c = 1\n[a.b]\n", [(3, 4, "duplicate table 'a.b'")])
        assertProblems("[[a]]\n[a.b]\n[[a]]\n[a.b]\n", [])
    }

    // MARK: - Several problems in one file

    func testAllProblemsAreReportedInOneRun() {
        let text = """
            # secproxy
            [server]
            workers = four
            log_level = "info
            max_connections = 100 200

            [[listener]]
            listen = "0.0.0.0:8443"
            listen = "0.0.0.0:9443"
            upstream "10.0.0.1:80"
            tls = { cert = "a.pem", }

            [server]
            port = 84x3
            ok = true
            """
        assertProblems(
            text,
            [
                (3, 11, "invalid value"),
                (4, 13, "unterminated string"),
                (5, 23, "expected end of line after value"),
                (9, 1, "duplicate key 'listen'"),
                (10, 10, "expected '=' after key 'upstream'"),
                (11, 23, "trailing comma"),
                (13, 2, "duplicate table 'server'"),
                (14, 8, "invalid value"),
            ])
        let root = TOMLParser.parse(text).root
        XCTAssertEqual(value(root, "server", "max_connections"), .integer(100))
        let listeners = array(value(root, "listener"))
        XCTAssertEqual(listeners.count, 1)
        XCTAssertEqual(listeners.first.flatMap { table($0.value)?["listen"]?.node.value }, .string("0.0.0.0:8443"))
    }

    func testProblemsAreSortedByLocation() {
        let document = TOMLParser.parse("a = \"\\q\" x\nb = 1\nb = 2\n")
        XCTAssertEqual(document.problems.map(\.location), [loc(1, 6), loc(1, 10), loc(3, 1)])
        XCTAssertEqual(document.problems.map(\.location), document.problems.map(\.location).sorted())
    }

    func testValidDocumentHasNoProblems() {
        let text = """
            # A full secproxy-like configuration.
            [server]
            workers = 0
            max_connections = 20_000
            drain_timeout = "30s"
            log_format = "logfmt"

            [admin]
            listen = "127.0.0.1:9901"

            [[listener]]
            name = "public"
            listen = ["0.0.0.0:443", "[::]:443"]
            upstream = { host = "10.0.0.5", port = 8080 }

              [listener.tls]
              cert = "certs/public.pem"
              key = 'certs/public.key'
              protocols = [ "TLSv1.2", "TLSv1.3" ]

              [[listener.tls.sni]]
              server_name = "*.example.com"
              cert = "certs/wild.pem"
            """
        let root = parseValid(text)
        XCTAssertEqual(root.entries.map(\.key), ["server", "admin", "listener"])
        XCTAssertEqual(value(root, "server", "max_connections"), .integer(20000))
    }
}
