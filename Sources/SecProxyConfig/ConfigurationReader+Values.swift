/// Opening tables against their schema, and typed reads of single values. Every problem is reported at the
/// first character of the key, as SPEC §1 asks.
extension ConfigurationReader {
    /// Checks `table` against `schema`: reports unknown keys and tables (with a suggestion when a known key
    /// is close) and values of the wrong TOML type.
    mutating func open(_ table: TOMLTable, as schema: TableSchema) -> CheckedTable {
        for entry in table.entries {
            guard let kind = schema.kind(of: entry.key) else {
                reportUnknown(entry, in: schema)
                continue
            }
            if !kind.accepts(entry.node.value) {
                reportWrongType(entry, expected: kind, in: schema)
            }
        }
        return CheckedTable(table: table, schema: schema)
    }

    private mutating func reportUnknown(_ entry: TOMLEntry, in schema: TableSchema) {
        var message: String
        switch entry.node.value {
        case .table:
            message = "unknown table \(schema.displayName(ofSubtable: entry.key, isArray: false))"
        case .array(let elements) where !elements.isEmpty && elements.allSatisfy(\.isTable):
            message = "unknown table \(schema.displayName(ofSubtable: entry.key, isArray: true))"
        default:
            message = "unknown key '\(entry.key)' \(schema.path.isEmpty ? "at" : "in") \(schema.displayName)"
        }
        if let suggestion = EditDistance.closest(to: entry.key, among: schema.keys.map(\.name)) {
            message += "; did you mean '\(suggestion)'?"
        }
        error(message, at: entry.keyLocation)
    }

    private mutating func reportWrongType(_ entry: TOMLEntry, expected kind: ConfigValueKind, in schema: TableSchema) {
        var found = entry.node.value.typeName
        if case .array(let elements) = entry.node.value {
            if kind == .stringArray, let odd = elements.first(where: { !$0.isString }) {
                found = "\(odd.value.typeName) in the array"
            } else if kind == .arrayOfTables {
                found = "an array of values"
            }
        }
        var message = "expected \(kind.expectation) for '\(entry.key)', found \(found)"
        switch (kind, entry.node.value) {
        case (.arrayOfTables, .table):
            message += "; write \(schema.displayName(ofSubtable: entry.key, isArray: true))"
        case (.table, .array):
            message += "; write \(schema.displayName(ofSubtable: entry.key, isArray: false))"
        default:
            break
        }
        error(message, at: entry.keyLocation)
    }

    /// A string value.
    mutating func string(_ key: String, in table: CheckedTable) -> Located<String>? {
        guard let entry = table.entry(key), case .string(let value) = entry.node.value else { return nil }
        return Located(value, at: entry.keyLocation)
    }

    /// A boolean value.
    mutating func boolean(_ key: String, in table: CheckedTable) -> Bool? {
        guard let entry = table.entry(key), case .boolean(let value) = entry.node.value else { return nil }
        return value
    }

    /// An integer within `range` (an upper bound of `Int.max` means none).
    mutating func integer(_ key: String, in table: CheckedTable, range: ClosedRange<Int>) -> Int? {
        guard let entry = table.entry(key), case .integer(let raw) = entry.node.value else { return nil }
        guard let value = Int(exactly: raw), range.contains(value) else {
            let bounds =
                range.upperBound == Int.max
                ? "at least \(range.lowerBound)" : "from \(range.lowerBound) to \(range.upperBound)"
            error("'\(key)' must be \(bounds), found \(raw)", at: entry.keyLocation)
            return nil
        }
        return value
    }

    /// A duration string ("10s"); zero only when `allowZero`.
    mutating func duration(_ key: String, in table: CheckedTable, allowZero: Bool) -> Duration? {
        guard let text = string(key, in: table) else { return nil }
        guard let value = Duration(configText: text.value) else {
            error(
                "invalid duration '\(text.value)' for '\(key)': expected a number with a unit (ms, s, m, h), "
                    + "e.g. \"10s\"",
                at: text.location
            )
            return nil
        }
        if !allowZero, value == .zero {
            error("'\(key)' must be greater than zero", at: text.location)
            return nil
        }
        return value
    }

    /// A size string ("64KiB") within `range`, in bytes.
    mutating func size(_ key: String, in table: CheckedTable, range: ClosedRange<Int>) -> Int? {
        guard let text = string(key, in: table) else { return nil }
        guard let value = ByteSize(configText: text.value) else {
            error(
                "invalid size '\(text.value)' for '\(key)': expected a whole number with a unit "
                    + "(\(ByteSize.unitList)), e.g. \"64KiB\"",
                at: text.location
            )
            return nil
        }
        guard range.contains(value.bytes) else {
            error(
                "'\(key)' must be from \(Self.binarySize(range.lowerBound)) to \(Self.binarySize(range.upperBound)), "
                    + "found '\(text.value)'",
                at: text.location
            )
            return nil
        }
        return value.bytes
    }

    /// "1KiB", "64MiB", or a plain byte count when not a whole number of KiB/MiB/GiB.
    private static func binarySize(_ bytes: Int) -> String {
        for (symbol, factor) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] where bytes % factor == 0 {
            return "\(bytes / factor)\(symbol)"
        }
        return "\(bytes)B"
    }

    /// One of an enumeration's raw values; the message lists them all.
    mutating func choice<Choice: RawRepresentable & CaseIterable>(
        _ key: String,
        in table: CheckedTable,
        of type: Choice.Type
    ) -> Located<Choice>? where Choice.RawValue == String {
        guard let text = string(key, in: table) else { return nil }
        if let value = Choice(rawValue: text.value) {
            return Located(value, at: text.location)
        }
        let allowed = Choice.allCases.map(\.rawValue)
        var message = "invalid value '\(text.value)' for '\(key)': expected \(Self.alternatives(allowed))"
        if let suggestion = EditDistance.closest(to: text.value, among: allowed) {
            message += "; did you mean '\(suggestion)'?"
        }
        error(message, at: text.location)
        return nil
    }

    /// `"a", "b" or "c"`.
    static func alternatives(_ values: [String]) -> String {
        let quoted = values.map { "\"\($0)\"" }
        guard quoted.count > 1 else { return quoted.first ?? "" }
        return quoted.dropLast().joined(separator: ", ") + " or " + quoted.last!
    }

    /// An array of strings.
    mutating func stringArray(_ key: String, in table: CheckedTable) -> Located<[String]>? {
        guard let entry = table.entry(key), case .array(let nodes) = entry.node.value else { return nil }
        let strings = nodes.compactMap { node -> String? in
            if case .string(let value) = node.value { value } else { nil }
        }
        return Located(strings, at: entry.keyLocation)
    }

    /// A file path, resolved against the configuration's folder. An empty string means "not set" for an
    /// optional file and is an error for a required one.
    mutating func file(_ key: String, in table: CheckedTable, required: Bool = false) -> FileReference? {
        guard let text = string(key, in: table) else { return nil }
        if text.value.isEmpty {
            if required { error("'\(key)' must name a file", at: text.location) }
            return nil
        }
        return FileReference(
            path: PathResolver.resolve(text.value, against: directory),
            written: text.value,
            location: text.location
        )
    }

    /// A listening address (`[admin] listen`, a listener's `listen`).
    mutating func listenAddress(_ key: String, in table: CheckedTable) -> Located<SocketAddressSpec>? {
        guard let text = string(key, in: table) else { return nil }
        switch AddressParser.listenAddress(text.value) {
        case .success(let address):
            return Located(address, at: text.location)
        case .failure(let problem):
            error("invalid address '\(text.value)' for '\(key)': \(problem.reason)", at: text.location)
            return nil
        }
    }

    /// A required, non-empty list of backends. Missing: reported at the table's header as
    /// "`owner` is missing required key 'backends'".
    /// - Parameters:
    ///   - table: a `[[listener]]` or `[[listener.route]]`.
    ///   - owner: how messages name the table, e.g. "listener 'web'".
    mutating func backends(in table: CheckedTable, owner: String) -> [BackendAddress]? {
        guard table.contains("backends") else {
            error("\(owner) is missing required key 'backends'", at: table.location)
            return nil
        }
        guard let list = stringArray("backends", in: table) else { return nil }
        guard !list.value.isEmpty else {
            error(
                "empty backend list in 'backends': add at least one \"HOST:PORT\" or \"unix:/path\"",
                at: list.location
            )
            return nil
        }
        var backends: [BackendAddress] = []
        var valid = true
        for text in list.value {
            switch AddressParser.backend(text, directory: directory) {
            case .success(let backend):
                if backends.contains(where: { $0.text == backend.text }) {
                    warning("backend '\(text)' is listed more than once in 'backends'", at: list.location)
                } else {
                    backends.append(backend)
                }
            case .failure(let problem):
                error("invalid backend '\(text)' in 'backends': \(problem.reason)", at: list.location)
                valid = false
            }
        }
        return valid ? backends : nil
    }
}
