import Foundation
import SecProxyTestSupport
import XCTest

/// Base for the command-line tests: a temporary directory with a throwaway CA under `certs/`, and helpers to run
/// `secproxy --check-config` and to locate keys in a config text.
class CLITestCase: XCTestCase {
    /// This test's files.
    var temporary: TemporaryDirectory!
    /// Daemons started by the test, ended in tearDown.
    var daemons: [ProxyProcess] = []
    private var _ca: TestCA?

    override func setUpWithError() throws {
        temporary = try TemporaryDirectory(prefix: "secproxy-cli")
    }

    override func tearDown() {
        for daemon in daemons { daemon.terminate() }
        daemons = []
        temporary?.cleanup()
        temporary = nil
        _ca = nil
    }

    /// The CA, made at first use in `certs/`.
    var ca: TestCA {
        get throws {
            if let _ca { return _ca }
            let made = try TestCA(directory: temporary.file("certs"))
            _ca = made
            return made
        }
    }

    /// Writes `text` as `name` in the temporary directory and returns its absolute path.
    func writeConfig(_ text: String, name: String = "secproxy.toml") throws -> String {
        try temporary.write(name, text)
    }

    /// Runs `secproxy --check-config -c PATH [--format json]`.
    func checkConfig(
        _ path: String,
        json: Bool = false,
        currentDirectory: String? = nil,
        environment: [String: String?] = [:]
    ) throws -> Subprocess.Result {
        var arguments = ["--check-config", "-c", path]
        if json { arguments += ["--format", "json"] }
        return try runSecproxy(arguments, environment: environment, currentDirectory: currentDirectory)
    }

    /// `LINE:COLUMN` (1-based) of the `occurrence`-th appearance of `needle` in `text`.
    func location(
        of needle: String,
        in text: String,
        occurrence: Int = 1,
        file: StaticString = #filePath,
        line: UInt = #line
    )
        -> String
    {
        var seen = 0
        for (index, lineText) in text.components(separatedBy: "\n").enumerated() {
            var searchStart = lineText.startIndex
            while let range = lineText.range(of: needle, range: searchStart..<lineText.endIndex) {
                seen += 1
                if seen == occurrence {
                    let column = lineText.unicodeScalars.distance(
                        from: lineText.unicodeScalars.startIndex,
                        to: range.lowerBound.samePosition(in: lineText.unicodeScalars)!
                    )
                    return "\(index + 1):\(column + 1)"
                }
                searchStart = range.upperBound
            }
        }
        XCTFail("'\(needle)' (occurrence \(occurrence)) not in the config text", file: file, line: line)
        return "?:?"
    }

    /// Fails unless `lines` has a diagnostic `PATH:LOCATION: SEVERITY: …` whose message contains every one of
    /// `fragments` (case-insensitive); returns that line.
    @discardableResult
    func assertDiagnostic(
        _ lines: [String],
        path: String,
        at location: String,
        _ severity: String = "error",
        containing fragments: [String] = [],
        file: StaticString = #filePath,
        line: UInt = #line
    ) -> String? {
        let prefix = "\(path):\(location): \(severity): "
        let candidates = lines.filter { $0.hasPrefix(prefix) }
        let match = candidates.first { candidate in
            fragments.allSatisfy { candidate.lowercased().contains($0.lowercased()) }
        }
        if match == nil {
            XCTFail(
                "no diagnostic '\(prefix)…' containing \(fragments); stderr was:\n" + lines.joined(separator: "\n"),
                file: file,
                line: line
            )
        }
        return match
    }

    /// Noon UTC `days` days from today, so the expected `YYYY-MM-DD` does not depend on the time zone or the hour.
    func noonUTC(daysFromNow days: Int) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let today = calendar.startOfDay(for: Date())
        return calendar.date(byAdding: .day, value: days, to: today)!.addingTimeInterval(12 * 3600)
    }
}
