/// A table while the document is being built: insertion order + lookup, and how it was created.
final class TOMLMutableTable {
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
    var entries: [String: TOMLMutableEntry] = [:]

    init(kind: Kind, location: SourceLocation) {
        self.kind = kind
        self.location = location
    }

    func add(_ key: String, at keyLocation: SourceLocation, _ value: TOMLMutableValue) {
        order.append(key)
        entries[key] = TOMLMutableEntry(keyLocation: keyLocation, value: value)
    }

    /// The finished table. Recursive, but only as deep as the parser's nesting limit lets documents be.
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

final class TOMLMutableEntry {
    var keyLocation: SourceLocation
    var value: TOMLMutableValue

    init(keyLocation: SourceLocation, value: TOMLMutableValue) {
        self.keyLocation = keyLocation
        self.value = value
    }
}

enum TOMLMutableValue {
    /// A complete value: scalar, static array or inline table (which cannot be extended).
    case value(TOMLNode)
    /// A table that headers or dotted keys may still extend.
    case table(TOMLMutableTable)
    /// An array of tables (`[[x]]`).
    case tableArray(TOMLTableArray)

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
final class TOMLTableArray {
    var tables: [TOMLMutableTable]
    let location: SourceLocation

    init(_ first: TOMLMutableTable, location: SourceLocation) {
        tables = [first]
        self.location = location
    }
}
