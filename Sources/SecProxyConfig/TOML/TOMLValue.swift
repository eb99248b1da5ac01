/// A parsed TOML document in which every key and value keeps its source position,
/// so that semantic checks can point at the exact key they complain about.
///
/// Tables keep their entries in source order. Arrays of tables (`[[listener]]`) are
/// `.array` values whose elements are `.table` nodes; each such table's `location` is its header.
public indirect enum TOMLValue: Sendable, Equatable {
    case string(String)
    case integer(Int64)
    case float(Double)
    case boolean(Bool)
    /// Offset/local date-times, dates and times, kept as written.
    case datetime(String)
    case array([TOMLNode])
    case table(TOMLTable)

    /// The TOML type name used in messages: "string", "integer", "float", "boolean",
    /// "datetime", "array", "table".
    public var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .boolean: "boolean"
        case .datetime: "datetime"
        case .array: "array"
        case .table: "table"
        }
    }
}

/// A value and the position of its first character.
public struct TOMLNode: Sendable, Equatable {
    public var value: TOMLValue
    /// Position of the value's first character (for a table: its header `[`, or the `{` of an inline table,
    /// or for an implicitly created table, the first key that created it).
    public var location: SourceLocation

    public init(_ value: TOMLValue, at location: SourceLocation) {
        self.value = value
        self.location = location
    }
}

/// One `key = value` of a table (or a sub-table / array of tables stored under its key).
public struct TOMLEntry: Sendable, Equatable {
    /// The (last segment of the) key, unquoted.
    public var key: String
    /// Position of the first character of the key as written (for `a.b.c = 1`, of `c`;
    /// for a `[server]` header, of `server`; for `[[listener]]`, of `listener` in the first header).
    public var keyLocation: SourceLocation
    public var node: TOMLNode

    public init(key: String, keyLocation: SourceLocation, node: TOMLNode) {
        self.key = key
        self.keyLocation = keyLocation
        self.node = node
    }
}

/// A TOML table with its entries in source order.
public struct TOMLTable: Sendable, Equatable {
    public var entries: [TOMLEntry]
    /// Position of the table's header (`[` of `[server]` / `[[listener]]`), or 1:1 for the root table.
    public var location: SourceLocation

    public init(entries: [TOMLEntry] = [], location: SourceLocation) {
        self.entries = entries
        self.location = location
    }

    /// The entry for `key`, if any.
    public subscript(key: String) -> TOMLEntry? {
        entries.first { $0.key == key }
    }
}

/// A problem found while parsing TOML: syntax errors and duplicate keys/tables.
public struct TOMLProblem: Error, Sendable, Equatable {
    /// Where the problem is: the offending character, or the second occurrence of a duplicate.
    public var location: SourceLocation
    /// A message for a user, e.g. "expected '=' after key 'listen'", "duplicate key 'listen'".
    public var message: String

    public init(location: SourceLocation, message: String) {
        self.location = location
        self.message = message
    }
}

/// The result of parsing: the document (as much as could be read) and every problem found.
public struct TOMLDocument: Sendable, Equatable {
    public var root: TOMLTable
    /// Syntax errors and duplicates, in source order. Empty for a valid document.
    public var problems: [TOMLProblem]

    public init(root: TOMLTable, problems: [TOMLProblem]) {
        self.root = root
        self.problems = problems
    }
}
