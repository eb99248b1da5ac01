import Dispatch
import Foundation
import XCTest

@testable import SecProxyConfig

/// Files made to crash or stall the parser (issue 7 §3): deep nesting must give a positioned problem, not a
/// stack overflow, and broken files that made the look-ahead quadratic must parse in linear time.
final class TOMLHostileInputTests: XCTestCase {
    private let limit = TOMLParser.maximumNesting

    /// Parses `text` on another thread and fails when it takes longer than `seconds`: a quadratic parser takes
    /// minutes on these inputs, the linear one well under a second in a release build.
    private func parse(
        _ text: String,
        within seconds: Double = 30,
        file: StaticString = #filePath,
        line: UInt = #line
    ) -> TOMLDocument? {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var document: TOMLDocument?
        Thread.detachNewThread {
            document = TOMLParser.parse(text)
            done.signal()
        }
        guard done.wait(timeout: .now() + seconds) == .success else {
            XCTFail("parsing \(text.utf8.count) bytes took longer than \(seconds) s", file: file, line: line)
            return nil
        }
        return document
    }

    private func messages(_ document: TOMLDocument?) -> [String] {
        document?.problems.map { "\($0.location): \($0.message)" } ?? []
    }

    private func assertTooDeep(
        _ document: TOMLDocument?,
        at location: SourceLocation,
        file: StaticString = #filePath,
        line: UInt = #line
    ) {
        let found = document?.problems.contains {
            $0.location == location && $0.message.hasPrefix("nesting is too deep: at most 32 levels")
        }
        XCTAssertEqual(found, true, "no nesting problem at \(location): \(messages(document))", file: file, line: line)
    }

    // MARK: - Nesting

    func testTwoHundredThousandOpeningBracketsAreOneCleanError() {
        let document = parse(String(repeating: "[", count: 200_000))
        XCTAssertEqual(messages(document), ["1:3: expected a key, found '['"])
    }

    func testDeeplyNestedArrayValueStopsAtTheLimit() {
        let document = parse("a = " + String(repeating: "[", count: 200_000) + "\nb = 1\n")
        // `a = [` puts level 1 at column 5; the first level too many is 32 columns further.
        assertTooDeep(document, at: SourceLocation(line: 1, column: 5 + limit))
        XCTAssertNotNil(document?.root["b"], "parsing goes on after the broken line")
    }

    func testDeeplyNestedInlineTablesStopAtTheLimit() {
        let document = parse("a = " + String(repeating: "{b = ", count: 100_000) + "\n")
        assertTooDeep(document, at: SourceLocation(line: 1, column: 5 + 5 * limit))
    }

    func testMixedArraysAndInlineTablesCountTogether() {
        let document = parse("a = " + String(repeating: "[{x = ", count: 50_000) + "\n")
        // Each `[{x = ` is two levels of six characters: level 33 is the `[` of the 17th.
        assertTooDeep(document, at: SourceLocation(line: 1, column: 5 + 6 * (limit / 2)))
    }

    func testLongDottedKeyStopsAtTheLimit() {
        let key = [String](repeating: "k", count: 100_000).joined(separator: ".")
        let document = parse(key + " = 1\n")
        // `k.k.…`: the segment that would make table 33 is the 33rd, at column 1 + 2 × 32.
        assertTooDeep(document, at: SourceLocation(line: 1, column: 1 + 2 * limit))
        XCTAssertEqual(document?.problems.count, 1, "\(messages(document))")
        XCTAssertEqual(document?.root.entries.count, 0)
    }

    func testLongTableHeaderStopsAtTheLimit() {
        let key = [String](repeating: "t", count: 100_000).joined(separator: ".")
        let document = parse("[\(key)]\nx = 1\n[ok]\ny = 2\n")
        assertTooDeep(document, at: SourceLocation(line: 1, column: 2 + 2 * limit))
        XCTAssertEqual(document?.problems.count, 1, "\(messages(document))")
        XCTAssertNil(document?.root["t"], "the keys under a broken header are dropped")
        XCTAssertNotNil(document?.root["ok"])
    }

    func testExactlyTheLimitIsAllowed() {
        let arrays = "a = " + String(repeating: "[", count: limit) + String(repeating: "]", count: limit) + "\n"
        XCTAssertEqual(messages(parse(arrays)), [])
        let header = "[" + [String](repeating: "t", count: limit).joined(separator: ".") + "]\nx = 1\n"
        XCTAssertEqual(messages(parse(header)), [])
        let dotted = [String](repeating: "d", count: limit + 1).joined(separator: ".") + " = 1\n"
        XCTAssertEqual(messages(parse(dotted)), [], "32 tables and a key")
    }

    func testLevelsAddUpAcrossHeaderDottedKeyAndValue() {
        // 30 header segments + 2 dotted tables = 32; the array is the 33rd level.
        let header = "[" + [String](repeating: "t", count: 30).joined(separator: ".") + "]\n"
        XCTAssertEqual(messages(parse(header + "a.b.c = 1\n")), [])
        let document = parse(header + "a.b.c = []\n")
        assertTooDeep(document, at: SourceLocation(line: 2, column: 9))
        let deeper = parse(header + "a.b.c.d = 1\n")
        assertTooDeep(deeper, at: SourceLocation(line: 2, column: 5))
    }

    func testTooDeepPartThatIsClosedIsSkippedAndParsingGoesOn() {
        let deep = String(repeating: "[", count: 40) + String(repeating: "]", count: 40)
        let document = parse("a = \(deep)\nb = [1, \(deep), 2]\nc = 3\n")
        XCTAssertEqual(
            messages(document),
            [
                "1:\(5 + limit): nesting is too deep: at most 32 levels of tables, arrays and inline tables are allowed",
                "2:\(9 + limit - 1): nesting is too deep: at most 32 levels of tables, arrays and inline tables are allowed",
            ]
        )
        guard case .array(let elements)? = document?.root["b"]?.node.value else {
            return XCTFail("b is not an array: \(String(describing: document?.root["b"]))")
        }
        // The levels up to the limit are kept, the one beyond it is skipped to its `]`, the array goes on.
        XCTAssertEqual(elements.count, 3)
        XCTAssertEqual(elements.first?.value, .integer(1))
        XCTAssertEqual(elements.last?.value, .integer(2))
        XCTAssertEqual(document?.root["c"]?.node.value, .integer(3))
    }

    // MARK: - Linear time

    func testManyKeyValueLinesInsideAnArrayParseInLinearTime() {
        // Each line looks like `key = value` inside an array that is closed at the very end: the look-ahead
        // "is the array closed later?" used to scan to the end from every line.
        let lines = 60_000
        let text = "a = [\n" + String(repeating: "b = 1,\n", count: lines) + "]\n"
        let document = parse(text)
        XCTAssertEqual(document?.problems.first?.location, SourceLocation(line: 2, column: 1))
        XCTAssertEqual(document?.problems.last?.location, SourceLocation(line: 2 + TOMLParser.maximumProblems, column: 1))
    }

    func testManyUnterminatedArraysParseInLinearTime() {
        // Every line opens an array that nothing closes: each one's look-ahead used to run to the end of file.
        let lines = 60_000
        let document = parse(String(repeating: "a = [\n", count: lines))
        XCTAssertEqual(document?.problems.first?.message, "unterminated array: missing ']'")
        // Each line is its own unterminated array (the next `a = [` line ends it).
        XCTAssertEqual(document?.problems.prefix(2).map(\.location.line), [1, 2])
        XCTAssertEqual(document?.problems.count, TOMLParser.maximumProblems + 1)
    }

    func testManyUnterminatedInlineTablesParseInLinearTime() {
        let lines = 60_000
        let document = parse(String(repeating: "a = {b = 1\n", count: lines))
        XCTAssertEqual(
            document?.problems.first?.message,
            "unterminated inline table: missing '}' (inline tables must be on a single line)"
        )
    }

    func testMixedClosersInOneLongElementAreLinear() {
        // `[[[[…` then `}}}}…` inside an array element: each `}` used to search the whole stack of openers.
        let text = "a = [ x" + String(repeating: "[", count: 100_000) + String(repeating: "}", count: 100_000) + "\n"
        let document = parse(text)
        XCTAssertFalse(document?.problems.isEmpty ?? true)
    }

    // MARK: - Bounded output

    func testProblemsStopAtTheLimitWithANote() {
        let document = parse("#" + String(repeating: "\u{01}", count: 1 << 20) + "\nok = 1\n")
        let limit = TOMLParser.maximumProblems
        XCTAssertEqual(document?.problems.count, limit + 1)
        XCTAssertEqual(
            document?.problems.last.map { "\($0.location): \($0.message)" },
            "1:\(limit + 2): too many syntax errors: only the first \(limit) are reported"
        )
        XCTAssertEqual(document?.root["ok"]?.node.value, .integer(1), "the document is still read to the end")
    }

    func testExactlyTheLimitOfProblemsHasNoNote() {
        let document = parse("#" + String(repeating: "\u{01}", count: TOMLParser.maximumProblems) + "\n")
        XCTAssertEqual(document?.problems.count, TOMLParser.maximumProblems)
        XCTAssertFalse(messages(document).contains { $0.contains("too many") })
    }

    func testLoaderReportsAtMostItsLimitOfDiagnostics() {
        let limit = ConfigurationLoader.maximumDiagnostics
        let text = "[server]\n" + (0..<(limit + 50)).map { "unknown_\($0) = 1\n" }.joined()
        let result = ConfigurationLoader.load(text: text, path: "t.toml", directory: "/etc")
        XCTAssertEqual(result.diagnostics.count, limit + 1)
        XCTAssertEqual(result.diagnostics, result.diagnostics.sortedByLocation())
        // 250 unknown keys and "no [[listener]] defined" at 1:1: the note stands where the first one left out
        // would have, the key on line limit + 1.
        XCTAssertEqual(
            result.diagnostics.last?.description,
            "t.toml:\(limit + 1):1: error: too many problems: only the first \(limit) are reported, 51 more are not shown"
        )
    }
}
