import Foundation

/// A TOML value in a test configuration.
public enum TOMLValue: Sendable, Equatable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral
{
    case string(String)
    case integer(Int)
    case boolean(Bool)
    case array([TOMLValue])

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .integer(value) }
    public init(booleanLiteral value: Bool) { self = .boolean(value) }
    public init(arrayLiteral elements: TOMLValue...) { self = .array(elements) }

    /// The value as written in TOML.
    public var rendered: String {
        switch self {
        case .string(let string): return tomlQuoted(string)
        case .integer(let integer): return String(integer)
        case .boolean(let boolean): return boolean ? "true" : "false"
        case .array(let values): return "[" + values.map(\.rendered).joined(separator: ", ") + "]"
        }
    }
}

/// `text` as a TOML basic string.
public func tomlQuoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// A secproxy configuration built in code and written as TOML. Listeners default to `127.0.0.1:0`, so the tests
/// read the bound port from the `msg=listening` line.
public struct ProxyConfig: Sendable {
    /// One `[[listener]]`.
    public struct Listener: Sendable {
        public var name: String
        public var listen: String
        /// `tls` or `plain`.
        public var mode: String
        public var backends: [String]
        /// Other keys of the `[[listener]]` table (timeouts, balance, …).
        public var settings: [String: TOMLValue]
        /// The `[listener.tls]` table (`cert`, `key`, …), for `mode = "tls"`.
        public var tls: [String: TOMLValue]?
        /// Raw TOML appended after the listener's tables (e.g. `[[listener.tls.sni]]`).
        public var extraTOML: String

        public init(
            name: String,
            listen: String = "127.0.0.1:0",
            mode: String,
            backends: [String],
            settings: [String: TOMLValue] = [:],
            tls: [String: TOMLValue]? = nil,
            extraTOML: String = ""
        ) {
            self.name = name
            self.listen = listen
            self.mode = mode
            self.backends = backends
            self.settings = settings
            self.tls = tls
            self.extraTOML = extraTOML
        }

        /// A plain listener.
        public static func plain(
            _ name: String,
            backends: [String],
            settings: [String: TOMLValue] = [:]
        ) -> Listener {
            Listener(name: name, mode: "plain", backends: backends, settings: settings)
        }

        /// A TLS listener with `cert`/`key` and further `[listener.tls]` keys.
        public static func tls(
            _ name: String,
            cert: String,
            key: String,
            backends: [String],
            settings: [String: TOMLValue] = [:],
            tlsSettings: [String: TOMLValue] = [:]
        ) -> Listener {
            var table = tlsSettings
            table["cert"] = .string(cert)
            table["key"] = .string(key)
            return Listener(name: name, mode: "tls", backends: backends, settings: settings, tls: table)
        }
    }

    /// `[server]` keys.
    public var server: [String: TOMLValue]
    /// `[defaults]` keys.
    public var defaults: [String: TOMLValue]
    /// The listeners, in order.
    public var listeners: [Listener]

    /// A config with `log_level = "info"`, a short `drain_timeout`, and the given listeners.
    public init(
        server: [String: TOMLValue] = [:],
        defaults: [String: TOMLValue] = [:],
        listeners: [Listener]
    ) {
        var serverTable: [String: TOMLValue] = ["log_level": "info", "log_format": "logfmt", "drain_timeout": "2s"]
        for (key, value) in server { serverTable[key] = value }
        self.server = serverTable
        self.defaults = defaults
        self.listeners = listeners
    }

    /// The TOML text (keys sorted within each table).
    public var rendered: String {
        var out = "# written by SecProxyTestSupport.ProxyConfig\n[server]\n"
        for key in server.keys.sorted() { out += "\(key) = \(server[key]!.rendered)\n" }
        if !defaults.isEmpty {
            out += "\n[defaults]\n"
            for key in defaults.keys.sorted() { out += "\(key) = \(defaults[key]!.rendered)\n" }
        }
        for listener in listeners {
            out += "\n[[listener]]\n"
            out += "name = \(tomlQuoted(listener.name))\n"
            out += "listen = \(tomlQuoted(listener.listen))\n"
            out += "mode = \(tomlQuoted(listener.mode))\n"
            out += "backends = \(TOMLValue.array(listener.backends.map(TOMLValue.string)).rendered)\n"
            for key in listener.settings.keys.sorted() { out += "\(key) = \(listener.settings[key]!.rendered)\n" }
            if let tls = listener.tls {
                out += "\n[listener.tls]\n"
                for key in tls.keys.sorted() { out += "\(key) = \(tls[key]!.rendered)\n" }
            }
            if !listener.extraTOML.isEmpty { out += "\n" + listener.extraTOML + "\n" }
        }
        return out
    }

    /// Writes the TOML to `name` in `directory` and returns its path.
    @discardableResult
    public func write(to directory: TemporaryDirectory, name: String = "secproxy.toml") throws -> String {
        try directory.write(name, rendered)
    }
}
