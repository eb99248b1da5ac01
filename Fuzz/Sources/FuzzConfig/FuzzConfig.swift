import SecProxyConfig

/// One input: the bytes as a configuration file's text, through the TOML parser and every check of
/// `ConfigurationLoader.load` (the pure-Swift part of `--check-config`, startup and reload).
///
/// Besides crashes, hangs and memory errors, it checks what callers rely on: problems and diagnostics are
/// sorted and point inside the text, and there is a configuration exactly when there is no error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // Invalid UTF-8 is refused before parsing (Preparation); repairing it still exercises the parser.
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let lines = text.utf8.reduce(into: 1) { count, byte in if byte == UInt8(ascii: "\n") { count += 1 } }

    let document = TOMLParser.parse(text)
    var previous = SourceLocation(line: 1, column: 1)
    for problem in document.problems {
        precondition(problem.location.line >= 1 && problem.location.line <= lines, "problem line out of the text")
        precondition(problem.location.column >= 1, "problem column before the line")
        precondition(!(problem.location < previous), "problems not sorted")
        previous = problem.location
    }

    let result = ConfigurationLoader.load(text: text, path: "fuzz.toml", directory: "/nonexistent")
    precondition(result.diagnostics == result.diagnostics.sortedByLocation(), "diagnostics not sorted")
    precondition((result.configuration == nil) == result.diagnostics.containsErrors, "configuration vs errors")
    for diagnostic in result.diagnostics {
        precondition(diagnostic.file == "fuzz.toml")
        if let location = diagnostic.location {
            precondition(location.line >= 1 && location.line <= lines && location.column >= 1, "diagnostic outside")
        }
    }
    if !document.problems.isEmpty {
        precondition(result.configuration == nil, "a TOML problem must be an error")
    }
    return 0
}
