/// A TLS protocol version; secproxy never speaks anything older than TLS 1.2.
public enum TLSProtocolVersion: Sendable, Hashable, CustomStringConvertible {
    case tls12
    case tls13

    /// Parses a config value: "1.2" / "1.3" (also "TLSv1.2" / "TLSv1.3").
    public init?(_ string: String) {
        switch string {
        case "1.2", "TLSv1.2": self = .tls12
        case "1.3", "TLSv1.3": self = .tls13
        default: return nil
        }
    }

    /// OpenSSL's name, as in logs: "TLSv1.2".
    public var description: String {
        switch self {
        case .tls12: return "TLSv1.2"
        case .tls13: return "TLSv1.3"
        }
    }

    var openSSLValue: Int32 {
        switch self {
        case .tls12: return TLS1_2_VERSION_VALUE
        case .tls13: return TLS1_3_VERSION_VALUE
        }
    }

    var rank: Int {
        switch self {
        case .tls12: return 0
        case .tls13: return 1
        }
    }
}

// `TLS1_2_VERSION` is a plain integer macro; spelled out so the enum stays independent of the import.
private let TLS1_2_VERSION_VALUE: Int32 = 0x0303
private let TLS1_3_VERSION_VALUE: Int32 = 0x0304
