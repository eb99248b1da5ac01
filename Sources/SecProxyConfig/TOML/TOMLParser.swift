/// A small TOML 1.0 parser that keeps the source position of every key and value.
///
/// Hostile input is bounded: nesting (tables, arrays, inline tables, dotted keys) stops at `maximumNesting`
/// levels with a positioned problem, the parser's recursion never goes deeper than that, and every look-ahead
/// is answered from one linear scan (`TOMLBracketMatches`), so parsing time grows linearly with the text.
public enum TOMLParser {
    /// The most levels of tables, arrays and inline tables a value may be nested in; each segment of a table
    /// header or dotted key counts as one, so `[a.b]` plus `c = [{}]` is four. A configuration needs five.
    public static let maximumNesting = 32

    /// The most syntax problems reported for one text; one more says that the rest are not shown.
    public static let maximumProblems = 100

    /// Parses `text`. Never throws: syntax errors and duplicates are returned in `problems`,
    /// together with as much of the document as could be read.
    ///
    /// Positions are 1-based; columns count Unicode scalars. After a syntax error the parser skips
    /// to the next line (or past the broken multi-line construct) and goes on, so that one run
    /// reports every problem of a file. Problems are sorted by position.
    public static func parse(_ text: String) -> TOMLDocument {
        TOMLParserEngine(text).run()
    }
}
