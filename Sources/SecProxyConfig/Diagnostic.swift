/// A 1-based line and column in a configuration file.
public struct SourceLocation: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// 1-based line.
    public var line: Int
    /// 1-based column, counted in Unicode scalars.
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public static func < (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        (lhs.line, lhs.column) < (rhs.line, rhs.column)
    }

    public var description: String { "\(line):\(column)" }
}

/// A value together with where it was written in the configuration file.
public struct Located<Value> {
    /// The value.
    public var value: Value
    /// Where the key that set it starts (for a default: the header of its table).
    public var location: SourceLocation

    public init(_ value: Value, at location: SourceLocation) {
        self.value = value
        self.location = location
    }
}

extension Located: Sendable where Value: Sendable {}
extension Located: Equatable where Value: Equatable {}
extension Located: Hashable where Value: Hashable {}

/// One configuration problem, reported in compiler style:
/// `PATH:LINE:COLUMN: error: MESSAGE`, or `PATH: error: MESSAGE` when no position applies.
public struct Diagnostic: Hashable, Sendable, CustomStringConvertible {
    public enum Severity: String, Hashable, Sendable {
        case error
        case warning
    }

    /// The configuration path as the user gave it.
    public var file: String
    /// Where the problem is; `nil` for whole-file problems (cannot read the file).
    public var location: SourceLocation?
    public var severity: Severity
    public var message: String

    public init(file: String, location: SourceLocation?, severity: Severity, message: String) {
        self.file = file
        self.location = location
        self.severity = severity
        self.message = message
    }

    public static func error(_ message: String, at location: SourceLocation?, file: String) -> Diagnostic {
        Diagnostic(file: file, location: location, severity: .error, message: message)
    }

    public static func warning(_ message: String, at location: SourceLocation?, file: String) -> Diagnostic {
        Diagnostic(file: file, location: location, severity: .warning, message: message)
    }

    /// The one-line compiler-style form.
    public var description: String {
        if let location {
            return "\(file):\(location.line):\(location.column): \(severity.rawValue): \(message)"
        }
        return "\(file): \(severity.rawValue): \(message)"
    }
}

extension Array where Element == Diagnostic {
    /// True when at least one diagnostic is an error.
    public var containsErrors: Bool { contains { $0.severity == .error } }

    /// The first `limit` of these sorted diagnostics, and when there are more, one error at the position of
    /// the first left out that says how many are not shown (so the result stays sorted).
    public func limited(to limit: Int) -> [Diagnostic] {
        guard count > limit, let first = self.dropFirst(limit).first else { return self }
        let note = Diagnostic.error(
            "too many problems: only the first \(limit) are reported, \(count - limit) more are not shown",
            at: first.location,
            file: first.file
        )
        return Array(prefix(limit)) + [note]
    }

    /// Sorted by position (file-level first), stable for equal positions.
    public func sortedByLocation() -> [Diagnostic] {
        enumerated().sorted { a, b in
            let la = a.element.location ?? SourceLocation(line: 0, column: 0)
            let lb = b.element.location ?? SourceLocation(line: 0, column: 0)
            return la == lb ? a.offset < b.offset : la < lb
        }.map(\.element)
    }
}
