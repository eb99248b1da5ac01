/// The tables that headers and dotted keys define or extend, and the conflicts between them.
extension TOMLParserEngine {
    static func article(_ node: TOMLNode) -> String {
        switch node.value {
        case .integer: "an integer"
        case .array: "an array"
        case .table: "an inline table"
        default: "a \(node.value.typeName)"
        }
    }

    /// Why `name` (holding `node`) cannot be used as a table.
    static func valueConflict(_ name: String, _ node: TOMLNode) -> String {
        if case .table = node.value { return "'\(name)' is an inline table, which cannot be extended" }
        return "'\(name)' is already defined as \(article(node))"
    }

    /// Resolves a header: creates/extends tables, reports conflicts, returns where its keys go.
    func define(_ key: [TOMLKeySegment], header open: Int, isArray: Bool) -> TOMLMutableTable {
        let headerLocation = location(open)
        let discarded = TOMLMutableTable(kind: .discarded, location: headerLocation)
        var fullName: String { Self.display(key) }
        let what = isArray ? "array of tables" : "table"
        var table = root
        for (k, segment) in key.dropLast().enumerated() {
            let segmentLocation = location(segment.index)
            if let entry = table.entries[segment.name] {
                switch entry.value {
                case .table(let sub):
                    table = sub
                case .tableArray(let array):
                    table = array.tables[array.tables.count - 1]
                case .value(let node):
                    let name = Self.display(key[...k])
                    report("cannot define \(what) '\(fullName)': \(Self.valueConflict(name, node))", at: segmentLocation)
                    return discarded
                }
            } else {
                let sub = TOMLMutableTable(kind: .implicit, location: segmentLocation)
                table.add(segment.name, at: segmentLocation, .table(sub))
                table = sub
            }
        }
        let last = key[key.count - 1]
        let lastLocation = location(last.index)
        guard let entry = table.entries[last.name] else {
            let new = TOMLMutableTable(kind: .header, location: headerLocation)
            table.add(last.name, at: lastLocation, isArray ? .tableArray(TOMLTableArray(new, location: headerLocation)) : .table(new))
            return new
        }
        switch (entry.value, isArray) {
        case (.tableArray(let array), true):
            let new = TOMLMutableTable(kind: .header, location: headerLocation)
            array.tables.append(new)
            return new
        case (.table(let sub), false):
            switch sub.kind {
            case .implicit:
                sub.kind = .header
                sub.location = headerLocation
                entry.keyLocation = lastLocation
                return sub
            case .dotted:
                report("duplicate table '\(fullName)': it is already defined by dotted keys", at: lastLocation)
            default:
                report("duplicate table '\(fullName)'", at: lastLocation)
            }
        case (.table, true):
            report("cannot define array of tables '\(fullName)': it is already defined as a table", at: lastLocation)
        case (.tableArray, false):
            report("cannot define table '\(fullName)': it is already defined as an array of tables", at: lastLocation)
        case (.value(let node), _):
            if isArray, case .array = node.value {
                report("cannot append to static array '\(fullName)' with [[\(fullName)]]", at: lastLocation)
            } else if case .table = node.value {
                report("cannot extend inline table '\(fullName)'", at: lastLocation)
            } else {
                report("cannot define \(what) '\(fullName)': it is already defined as \(Self.article(node))", at: lastLocation)
            }
        }
        return discarded
    }

    /// Inserts `key = node` into `table`, creating tables for dotted keys; reports conflicts.
    func insert(_ key: [TOMLKeySegment], _ node: TOMLNode, into start: TOMLMutableTable) {
        var table = start
        var fullName: String { Self.display(key) }
        for (k, segment) in key.dropLast().enumerated() {
            let segmentLocation = location(segment.index)
            guard let entry = table.entries[segment.name] else {
                let sub = TOMLMutableTable(kind: .dotted, location: segmentLocation)
                table.add(segment.name, at: segmentLocation, .table(sub))
                table = sub
                continue
            }
            let name = Self.display(key[...k])
            switch entry.value {
            case .table(let sub):
                switch sub.kind {
                case .dotted, .inline:
                    table = sub
                case .implicit:
                    sub.kind = .dotted
                    table = sub
                case .header, .root, .discarded:
                    report(
                        "cannot define '\(fullName)': table '\(name)' is defined by a table header and cannot be extended with dotted keys",
                        at: segmentLocation)
                    return
                }
            case .tableArray:
                report("cannot define '\(fullName)': '\(name)' is an array of tables", at: segmentLocation)
                return
            case .value(let existing):
                if case .table = existing.value {
                    report("cannot extend inline table '\(name)'", at: segmentLocation)
                } else {
                    report("cannot define '\(fullName)': \(Self.valueConflict(name, existing))", at: segmentLocation)
                }
                return
            }
        }
        let last = key[key.count - 1]
        if table.entries[last.name] != nil {
            report("duplicate key '\(fullName)'", at: last.index)
            return
        }
        table.add(last.name, at: location(last.index), .value(node))
    }
}
