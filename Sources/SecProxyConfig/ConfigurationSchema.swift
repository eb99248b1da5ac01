/// What a configuration key holds, as far as TOML types go; finer checks (duration syntax, ranges, enums)
/// happen when the value is read.
enum ConfigValueKind: Equatable {
    case string
    case integer
    case boolean
    case stringArray
    /// A string such as "10s".
    case duration
    /// A string such as "64KiB".
    case size
    /// A string naming a file.
    case path
    /// A sub-table: `[listener.tls]` or an inline table.
    case table
    /// An array of tables: `[[listener]]`.
    case arrayOfTables

    /// "a string", "an integer", ... for "expected a string for 'listen', found integer".
    var expectation: String {
        switch self {
        case .string: "a string"
        case .integer: "an integer"
        case .boolean: "a boolean"
        case .stringArray: "an array of strings"
        case .duration: "a duration string such as \"10s\""
        case .size: "a size string such as \"64KiB\""
        case .path: "a file path string"
        case .table: "a table"
        case .arrayOfTables: "an array of tables"
        }
    }

    /// Whether a TOML value is of this kind.
    func accepts(_ value: TOMLValue) -> Bool {
        switch (self, value) {
        case (.string, .string), (.duration, .string), (.size, .string), (.path, .string): true
        case (.integer, .integer), (.boolean, .boolean), (.table, .table): true
        case (.stringArray, .array(let elements)): elements.allSatisfy(\.isString)
        case (.arrayOfTables, .array(let elements)): elements.allSatisfy(\.isTable)
        default: false
        }
    }
}

extension TOMLNode {
    var isString: Bool {
        if case .string = value { true } else { false }
    }

    var isTable: Bool {
        if case .table = value { true } else { false }
    }
}

/// The keys one configuration table allows, and their kinds: the single source for unknown-key,
/// did-you-mean and type checks.
struct TableSchema {
    /// The table's dotted path: "" for the root, "server", "listener", "listener.tls", ...
    let path: String
    /// Whether it is an array of tables (`[[listener]]`).
    let isArray: Bool
    /// Allowed keys, in the order of SPEC §2 (the order suggestions prefer on ties).
    let keys: [(name: String, kind: ConfigValueKind)]

    /// The kind of `key`, or `nil` when the table does not allow it.
    func kind(of key: String) -> ConfigValueKind? {
        keys.first { $0.name == key }?.kind
    }

    /// How messages name the table: "[server]", "[[listener]]", "the top level".
    var displayName: String {
        if path.isEmpty { return "the top level" }
        return isArray ? "[[\(path)]]" : "[\(path)]"
    }

    /// How messages name a sub-table of this table.
    func displayName(ofSubtable key: String, isArray: Bool) -> String {
        let full = path.isEmpty ? key : "\(path).\(key)"
        return isArray ? "[[\(full)]]" : "[\(full)]"
    }
}

extension TableSchema {
    /// The `[defaults]` keys; every `[[listener]]` accepts them too, as overrides.
    static let connectionKeys: [(name: String, kind: ConfigValueKind)] = [
        ("handshake_timeout", .duration),
        ("idle_timeout", .duration),
        ("half_close_timeout", .duration),
        ("connect_timeout", .duration),
        ("max_connections_per_ip", .integer),
        ("max_new_connections_per_ip", .integer),
        ("buffer_size", .size),
    ]

    static let root = TableSchema(
        path: "",
        isArray: false,
        keys: [("server", .table), ("admin", .table), ("defaults", .table), ("listener", .arrayOfTables)]
    )

    static let server = TableSchema(
        path: "server",
        isArray: false,
        keys: [
            ("workers", .integer),
            ("max_connections", .integer),
            ("drain_timeout", .duration),
            ("log_format", .string),
            ("log_level", .string),
            ("watch_files", .boolean),
        ]
    )

    static let admin = TableSchema(path: "admin", isArray: false, keys: [("listen", .string)])

    static let defaults = TableSchema(path: "defaults", isArray: false, keys: connectionKeys)

    static let listener = TableSchema(
        path: "listener",
        isArray: true,
        keys: [
            ("name", .string),
            ("listen", .string),
            ("mode", .string),
            ("backends", .stringArray),
            ("balance", .string),
            ("proxy_protocol", .string),
            ("accept_proxy_protocol", .boolean),
            ("proxy_protocol_trusted", .stringArray),
        ] + connectionKeys + [
            ("tls", .table),
            ("route", .arrayOfTables),
            ("backend_tls", .table),
            ("health_check", .table),
        ]
    )

    static let tls = TableSchema(
        path: "listener.tls",
        isArray: false,
        keys: [
            ("cert", .path),
            ("key", .path),
            ("min_version", .string),
            ("max_version", .string),
            ("ciphers", .string),
            ("ciphersuites", .string),
            ("curves", .string),
            ("alpn", .stringArray),
            ("session_tickets", .boolean),
            ("ticket_key_file", .path),
            ("client_ca", .path),
            ("client_auth", .string),
            ("client_crl", .path),
            ("allowed_clients", .stringArray),
            ("strict_sni", .boolean),
            ("ocsp_response", .path),
            ("sni", .arrayOfTables),
        ]
    )

    static let sni = TableSchema(
        path: "listener.tls.sni",
        isArray: true,
        keys: [("cert", .path), ("key", .path), ("names", .stringArray)]
    )

    static let route = TableSchema(
        path: "listener.route",
        isArray: true,
        keys: [("sni", .string), ("backends", .stringArray)]
    )

    static let backendTLS = TableSchema(
        path: "listener.backend_tls",
        isArray: false,
        keys: [("ca", .path), ("server_name", .string), ("cert", .path), ("key", .path)]
    )

    static let healthCheck = TableSchema(
        path: "listener.health_check",
        isArray: false,
        keys: [("interval", .duration), ("timeout", .duration), ("fall", .integer), ("rise", .integer)]
    )
}
