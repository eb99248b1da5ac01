/// A TOML table that was checked against its `TableSchema` when it was opened: unknown keys and values of the
/// wrong TOML type have been reported, so lookups only return entries of the right kind.
struct CheckedTable {
    let table: TOMLTable
    let schema: TableSchema

    /// The table's header (`[` of `[server]`), for diagnostics about the table as a whole.
    var location: SourceLocation { table.location }

    /// Whether `key` is written at all, whatever its type.
    func contains(_ key: String) -> Bool {
        table[key] != nil
    }

    /// The first entry for `key`, when it has the kind the schema expects.
    func entry(_ key: String) -> TOMLEntry? {
        guard let entry = table[key], let kind = schema.kind(of: key), kind.accepts(entry.node.value) else {
            return nil
        }
        return entry
    }

    /// The sub-table under `key` (`[listener.tls]`), if written.
    func subtable(_ key: String) -> TOMLTable? {
        guard case .table(let table)? = entry(key)?.node.value else { return nil }
        return table
    }

    /// The tables of the array of tables under `key` (`[[listener]]`), in file order; empty if absent.
    func tables(_ key: String) -> [TOMLTable] {
        guard case .array(let nodes)? = entry(key)?.node.value else { return [] }
        return nodes.compactMap { node in
            if case .table(let table) = node.value { table } else { nil }
        }
    }
}
