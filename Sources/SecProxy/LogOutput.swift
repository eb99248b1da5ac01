import Foundation
import Logging
import NIOConcurrencyHelpers
import SecProxyConfig

/// Writes swift-log records to stderr as one logfmt or JSON line each (journald takes stderr).
///
/// Format and level live in a shared box so that a reload can change them after
/// `LoggingSystem.bootstrap`, which may run only once per process.
public struct LineLogHandler: LogHandler {
    /// Settings shared by every handler of the process.
    public final class Settings: Sendable {
        private let box: NIOLockedValueBox<(LogFormat, Logger.Level)>

        public init(format: LogFormat = .logfmt, level: Logger.Level = .info) {
            box = NIOLockedValueBox((format, level))
        }

        public var format: LogFormat { box.withLockedValue { $0.0 } }
        public var level: Logger.Level { box.withLockedValue { $0.1 } }

        public func update(format: LogFormat, level: Logger.Level) {
            box.withLockedValue { $0 = (format, level) }
        }
    }

    /// Fields of the per-connection line, in the order an operator reads them (SPEC §3).
    static let fieldOrder = [
        "listener", "client", "backend", "sni", "alpn", "tls_version", "cipher", "resumed",
        "bytes_in", "bytes_out", "duration_ms", "reason",
    ]
    private static let fieldRank: [String: Int] = Dictionary(
        uniqueKeysWithValues: fieldOrder.enumerated().map { ($1, $0) }
    )
    private static let writeLock = NIOLock()

    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let settings: Settings
    private var explicitLevel: Logger.Level?

    public init(settings: Settings) {
        self.settings = settings
    }

    public var logLevel: Logger.Level {
        get { explicitLevel ?? settings.level }
        set { explicitLevel = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        let keys = fields.keys.sorted { a, b in
            let ra = Self.fieldRank[a] ?? Int.max
            let rb = Self.fieldRank[b] ?? Int.max
            return ra == rb ? a < b : ra < rb
        }
        let ordered = keys.map { ($0, Self.text(fields[$0]!)) }
        let line: String
        switch settings.format {
        case .logfmt:
            line = Self.logfmtLine(level: event.level, message: "\(event.message)", fields: ordered)
        case .json:
            line = Self.jsonLine(level: event.level, message: "\(event.message)", fields: ordered)
        }
        Self.writeLock.withLock {
            var bytes = Array(line.utf8)
            bytes.append(0x0A)
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(2, raw.baseAddress! + offset, raw.count - offset)
                    if n <= 0 {
                        if n < 0 && errno == EINTR { continue }
                        return
                    }
                    offset += n
                }
            }
        }
    }

    static func text(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): return s
        case .stringConvertible(let c): return c.description
        case .array(let items): return items.map(text).joined(separator: ",")
        case .dictionary(let dict): return dict.keys.sorted().map { "\($0):\(text(dict[$0]!))" }.joined(separator: ",")
        }
    }

    static func levelName(_ level: Logger.Level) -> String {
        level.rawValue
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UTCTime(seconds: now.tv_sec).timestamp(milliseconds: Int(now.tv_nsec / 1_000_000))
    }

    static func logfmtLine(level: Logger.Level, message: String, fields: [(String, String)]) -> String {
        var line = "ts=\(timestamp()) level=\(levelName(level)) msg=\(logfmtValue(message))"
        for (key, value) in fields {
            line += " \(key)=\(logfmtValue(value))"
        }
        return line
    }

    /// Bare when safe; quoted with `\"`, `\\`, `\n` escapes when the value has spaces, quotes, `=` or controls.
    static func logfmtValue(_ value: String) -> String {
        if value.isEmpty { return "" }
        var needsQuotes = false
        for scalar in value.unicodeScalars {
            if scalar == " " || scalar == "\"" || scalar == "=" || scalar == "\\" || scalar.value < 0x20
                || scalar.value == 0x7F
            {
                needsQuotes = true
                break
            }
        }
        guard needsQuotes else { return value }
        return quoted(value)
    }

    static func jsonLine(level: Logger.Level, message: String, fields: [(String, String)]) -> String {
        var line = "{\"ts\":\(jsonString(timestamp())),\"level\":\(jsonString(levelName(level)))"
        line += ",\"msg\":\(jsonString(message))"
        for (key, value) in fields {
            line += ",\(jsonString(key)):\(jsonValue(key: key, value))"
        }
        return line + "}"
    }

    private static let numericFields: Set<String> = ["bytes_in", "bytes_out", "duration_ms"]

    /// Connection fields become JSON numbers/booleans/null where SPEC §3 says so; the rest strings.
    static func jsonValue(key: String, _ value: String) -> String {
        if fieldRank[key] != nil {
            if value.isEmpty { return "null" }
            if numericFields.contains(key), Int(value) != nil { return value }
            if key == "resumed", value == "true" || value == "false" { return value }
        }
        return jsonString(value)
    }

    static func jsonString(_ value: String) -> String {
        quoted(value)
    }

    /// `value` in double quotes with `"`, `\\` and control characters escaped: valid in JSON and logfmt.
    static func quoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\u" + hex4(scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    private static func hex4(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, 4 - s.count)) + s
    }
}

extension Logger.Level {
    init(_ level: LogLevel) {
        switch level {
        case .trace: self = .trace
        case .debug: self = .debug
        case .info: self = .info
        case .notice: self = .notice
        case .warning: self = .warning
        case .error: self = .error
        case .critical: self = .critical
        }
    }
}

/// A moment broken down in UTC, printed the two ways the daemon needs.
struct UTCTime {
    private var parts = tm()

    init(seconds: time_t) {
        var seconds = seconds
        gmtime_r(&seconds, &parts)
    }

    /// `YYYY-MM-DD`.
    var day: String {
        "\(Self.pad(parts.tm_year + 1900, 4))-\(Self.pad(parts.tm_mon + 1, 2))-\(Self.pad(parts.tm_mday, 2))"
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    func timestamp(milliseconds: Int) -> String {
        "\(day)T\(Self.pad(parts.tm_hour, 2)):\(Self.pad(parts.tm_min, 2)):\(Self.pad(parts.tm_sec, 2))."
            + "\(Self.pad(Int32(milliseconds), 3))Z"
    }

    private static func pad(_ value: Int32, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
