/// The whole secproxy configuration, as loaded from one TOML file (SPEC §2).
///
/// Immutable value; defaults live in `ConfigurationDefaults`. Fields that later stages check
/// against the file system or OpenSSL (certificates, cipher strings, ...) are `Located`, so their
/// diagnostics can point at the key that set them.
public struct ProxyConfiguration: Sendable {
    /// The configuration path as the user gave it (used in diagnostics).
    public var path: String
    /// Absolute folder of the configuration file; relative paths in the file are resolved against it.
    public var directory: String
    public var server: ServerSettings
    /// `[admin]`, when present.
    public var admin: AdminSettings?
    /// `[[listener]]` tables in file order.
    public var listeners: [ListenerConfiguration]

    public init(
        path: String, directory: String, server: ServerSettings, admin: AdminSettings?,
        listeners: [ListenerConfiguration]
    ) {
        self.path = path
        self.directory = directory
        self.server = server
        self.admin = admin
        self.listeners = listeners
    }
}

public enum LogFormat: String, Sendable, CaseIterable {
    case logfmt
    case json
}

public enum LogLevel: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

/// `[server]`.
public struct ServerSettings: Sendable {
    /// Event-loop threads; 0 = one per CPU core.
    public var workers: Int
    /// Most concurrent connections for the whole process.
    public var maxConnections: Int
    /// On SIGTERM: time given to open connections before they are closed.
    public var drainTimeout: Duration
    public var logFormat: LogFormat
    public var logLevel: LogLevel
    /// Reload by itself when a file the config names changes.
    public var watchFiles: Bool

    public init(
        workers: Int = 0, maxConnections: Int = 20000, drainTimeout: Duration = .seconds(30),
        logFormat: LogFormat = .logfmt, logLevel: LogLevel = .info, watchFiles: Bool = false
    ) {
        self.workers = workers
        self.maxConnections = maxConnections
        self.drainTimeout = drainTimeout
        self.logFormat = logFormat
        self.logLevel = logLevel
        self.watchFiles = watchFiles
    }
}

/// `[admin]`.
public struct AdminSettings: Sendable {
    public var listen: SocketAddressSpec

    public init(listen: SocketAddressSpec) {
        self.listen = listen
    }
}

/// A listening address: an IP literal (or `localhost`) and a port. `text` is as written.
public struct SocketAddressSpec: Sendable, Hashable, CustomStringConvertible {
    /// Host without brackets: "0.0.0.0", "::", "127.0.0.1", "::1", "localhost".
    public var host: String
    public var port: Int
    /// As written in the config, e.g. "[::]:8443".
    public var text: String

    public init(host: String, port: Int, text: String) {
        self.host = host
        self.port = port
        self.text = text
    }

    public var description: String { text }
}

/// A backend as written in the config: `HOST:PORT`, `[V6]:PORT` or `unix:/path`.
public struct BackendAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// Host is an IP literal (no brackets) or a DNS name resolved at connect time.
        case inet(host: String, port: Int)
        /// Absolute path (relative paths are resolved against the config's folder).
        case unix(path: String)
    }

    public var kind: Kind
    /// Exactly as written in the config; used in logs and metric labels.
    public var text: String

    public init(kind: Kind, text: String) {
        self.kind = kind
        self.text = text
    }

    public var description: String { text }
}

/// The `[defaults]` keys, which every listener may override.
public struct ConnectionSettings: Sendable, Equatable {
    /// Accept -> TLS handshake complete; an absolute deadline.
    public var handshakeTimeout: Duration
    /// No byte in either direction.
    public var idleTimeout: Duration
    /// After one side's FIN: close when the other direction is quiet this long.
    public var halfCloseTimeout: Duration
    /// Backend connect (TCP and backend TLS).
    public var connectTimeout: Duration
    /// Concurrent connections per client address; 0 = unlimited.
    public var maxConnectionsPerIP: Int
    /// New connections per second per client address; 0 = unlimited.
    public var maxNewConnectionsPerIP: Int
    /// Most bytes held in memory per direction per connection.
    public var bufferSize: Int

    public init(
        handshakeTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(300),
        halfCloseTimeout: Duration = .seconds(30), connectTimeout: Duration = .seconds(5),
        maxConnectionsPerIP: Int = 0, maxNewConnectionsPerIP: Int = 0, bufferSize: Int = 64 * 1024
    ) {
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
        self.halfCloseTimeout = halfCloseTimeout
        self.connectTimeout = connectTimeout
        self.maxConnectionsPerIP = maxConnectionsPerIP
        self.maxNewConnectionsPerIP = maxNewConnectionsPerIP
        self.bufferSize = bufferSize
    }
}

public enum ListenerMode: String, Sendable, CaseIterable {
    case tls
    case plain
}

public enum BalanceStrategy: String, Sendable, CaseIterable {
    case roundRobin = "round_robin"
    case leastConnections = "least_connections"
    case randomTwo = "random_two"
}

public enum ProxyProtocolVersion: String, Sendable, CaseIterable {
    case off
    case v1
    case v2
}

/// One `[[listener]]`.
public struct ListenerConfiguration: Sendable {
    /// Unique, `[A-Za-z0-9_-]+`.
    public var name: String
    /// The `[[listener]]` header.
    public var location: SourceLocation
    public var listen: Located<SocketAddressSpec>
    public var mode: ListenerMode
    /// Never empty in a valid configuration.
    public var backends: [BackendAddress]
    public var balance: BalanceStrategy
    /// PROXY header sent to the backend.
    public var proxyProtocol: ProxyProtocolVersion
    /// Expect a PROXY header from the client.
    public var acceptProxyProtocol: Bool
    /// `proxy_protocol_trusted`: the peers that may connect when it is not empty (the load balancers that
    /// send PROXY headers); empty = any peer. See `trustsPeer(_:)`.
    public var proxyProtocolTrusted: [AddressRange]
    /// `[defaults]` merged with this listener's overrides.
    public var settings: ConnectionSettings
    /// `[listener.tls]`; present in a valid configuration exactly when `mode == .tls`.
    public var tls: TLSSettings?
    /// `[[listener.route]]` in file order.
    public var routes: [RouteSettings]
    /// `[listener.backend_tls]`.
    public var backendTLS: BackendTLSSettings?
    /// `[listener.health_check]`.
    public var healthCheck: HealthCheckSettings?

    public init(
        name: String, location: SourceLocation, listen: Located<SocketAddressSpec>, mode: ListenerMode,
        backends: [BackendAddress], balance: BalanceStrategy = .roundRobin, proxyProtocol: ProxyProtocolVersion = .off,
        acceptProxyProtocol: Bool = false, proxyProtocolTrusted: [AddressRange] = [],
        settings: ConnectionSettings = ConnectionSettings(), tls: TLSSettings? = nil,
        routes: [RouteSettings] = [], backendTLS: BackendTLSSettings? = nil, healthCheck: HealthCheckSettings? = nil
    ) {
        self.name = name
        self.location = location
        self.listen = listen
        self.mode = mode
        self.backends = backends
        self.balance = balance
        self.proxyProtocol = proxyProtocol
        self.acceptProxyProtocol = acceptProxyProtocol
        self.proxyProtocolTrusted = proxyProtocolTrusted
        self.settings = settings
        self.tls = tls
        self.routes = routes
        self.backendTLS = backendTLS
        self.healthCheck = healthCheck
    }
}

extension ListenerConfiguration {
    /// Whether a connection from `peer` may go on under `proxy_protocol_trusted`: always when the list is empty
    /// (the default, any peer), else when one of its ranges contains the address.
    /// - Parameter peer: the peer's address in network byte order, 4 or 16 bytes (`sin_addr`, `sin6_addr`).
    public func trustsPeer<Bytes: Collection>(_ peer: Bytes) -> Bool where Bytes.Element == UInt8 {
        proxyProtocolTrusted.admits(peer)
    }
}

extension [AddressRange] {
    /// The `proxy_protocol_trusted` rule: an empty list admits every peer, else one of its ranges must contain
    /// `peer` (4 or 16 bytes, network byte order).
    public func admits<Bytes: Collection>(_ peer: Bytes) -> Bool where Bytes.Element == UInt8 {
        isEmpty || contains { $0.contains(peer) }
    }
}

public enum TLSProtocolVersion: String, Sendable, CaseIterable, Comparable {
    case tls12 = "1.2"
    case tls13 = "1.3"

    public static func < (lhs: TLSProtocolVersion, rhs: TLSProtocolVersion) -> Bool {
        lhs == .tls12 && rhs == .tls13
    }
}

public enum ClientAuthMode: String, Sendable, CaseIterable {
    case require
    case optional
}

/// An `allowed_clients` entry.
public enum ClientMatcher: Sendable, Hashable {
    case commonName(String)
    case dnsName(String)
    case uri(String)
}

/// A file named by the configuration.
public struct FileReference: Sendable, Hashable {
    /// Absolute path (relative paths resolved against the config's folder).
    public var path: String
    /// As written in the config.
    public var written: String
    /// The key that named it.
    public var location: SourceLocation

    public init(path: String, written: String, location: SourceLocation) {
        self.path = path
        self.written = written
        self.location = location
    }
}

/// `[listener.tls]`.
public struct TLSSettings: Sendable {
    /// The `[listener.tls]` header.
    public var location: SourceLocation
    /// Certificate chain, leaf first.
    public var cert: FileReference
    public var key: FileReference
    public var minVersion: Located<TLSProtocolVersion>
    public var maxVersion: Located<TLSProtocolVersion>
    /// TLS 1.2 cipher list (OpenSSL syntax); "" = secure default.
    public var ciphers: Located<String>
    /// TLS 1.3 suites; "" = OpenSSL default.
    public var ciphersuites: Located<String>
    public var curves: Located<String>
    /// Offered protocols in server preference order; empty = no ALPN.
    public var alpn: [String]
    public var sessionTickets: Bool
    public var ticketKeyFile: FileReference?
    /// Set to require client certificates.
    public var clientCA: FileReference?
    public var clientAuth: ClientAuthMode
    public var clientCRL: FileReference?
    public var allowedClients: [ClientMatcher]
    public var strictSNI: Bool
    public var ocspResponse: FileReference?
    /// `[[listener.tls.sni]]`.
    public var sni: [SNICertificateSettings]

    public init(
        location: SourceLocation, cert: FileReference, key: FileReference,
        minVersion: Located<TLSProtocolVersion>, maxVersion: Located<TLSProtocolVersion>,
        ciphers: Located<String>, ciphersuites: Located<String>, curves: Located<String>,
        alpn: [String] = [], sessionTickets: Bool = true, ticketKeyFile: FileReference? = nil,
        clientCA: FileReference? = nil, clientAuth: ClientAuthMode = .require, clientCRL: FileReference? = nil,
        allowedClients: [ClientMatcher] = [], strictSNI: Bool = false, ocspResponse: FileReference? = nil,
        sni: [SNICertificateSettings] = []
    ) {
        self.location = location
        self.cert = cert
        self.key = key
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.ciphers = ciphers
        self.ciphersuites = ciphersuites
        self.curves = curves
        self.alpn = alpn
        self.sessionTickets = sessionTickets
        self.ticketKeyFile = ticketKeyFile
        self.clientCA = clientCA
        self.clientAuth = clientAuth
        self.clientCRL = clientCRL
        self.allowedClients = allowedClients
        self.strictSNI = strictSNI
        self.ocspResponse = ocspResponse
        self.sni = sni
    }
}

/// One `[[listener.tls.sni]]`.
public struct SNICertificateSettings: Sendable {
    /// Its header.
    public var location: SourceLocation
    public var cert: FileReference
    public var key: FileReference
    /// Explicit names; `nil` = the certificate's DNS SANs.
    public var names: [String]?

    public init(location: SourceLocation, cert: FileReference, key: FileReference, names: [String]? = nil) {
        self.location = location
        self.cert = cert
        self.key = key
        self.names = names
    }
}

/// One `[[listener.route]]`.
public struct RouteSettings: Sendable {
    public var location: SourceLocation
    /// Exact name or "*.example.org", lowercased.
    public var sni: String
    public var backends: [BackendAddress]

    public init(location: SourceLocation, sni: String, backends: [BackendAddress]) {
        self.location = location
        self.sni = sni
        self.backends = backends
    }
}

/// `[listener.backend_tls]`.
public struct BackendTLSSettings: Sendable {
    public var location: SourceLocation
    public var ca: FileReference?
    /// SNI sent and name verified; "" = no name check.
    public var serverName: String
    public var cert: FileReference?
    public var key: FileReference?

    public init(
        location: SourceLocation, ca: FileReference?, serverName: String, cert: FileReference?, key: FileReference?
    ) {
        self.location = location
        self.ca = ca
        self.serverName = serverName
        self.cert = cert
        self.key = key
    }
}

/// `[listener.health_check]`.
public struct HealthCheckSettings: Sendable {
    public var location: SourceLocation
    public var interval: Duration
    public var timeout: Duration
    public var fall: Int
    public var rise: Int

    public init(
        location: SourceLocation, interval: Duration = .seconds(5), timeout: Duration = .seconds(2), fall: Int = 3,
        rise: Int = 2
    ) {
        self.location = location
        self.interval = interval
        self.timeout = timeout
        self.fall = fall
        self.rise = rise
    }
}
