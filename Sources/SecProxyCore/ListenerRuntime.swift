import NIOCore
import SecProxyConfig
import SecProxyTLS

/// A backend ready to dial: the address resolved once when the literal allows it.
public struct BackendTarget: Sendable {
    enum Endpoint: Sendable {
        case address(SocketAddress)
        case hostPort(host: String, port: Int)
        case unix(path: String)
    }

    let endpoint: Endpoint
    /// As written in the config; used in logs and metrics.
    public let text: String

    public init(_ backend: BackendAddress) {
        self.text = backend.text
        switch backend.kind {
        case .inet(let host, let port):
            if let address = try? SocketAddress(ipAddress: host, port: port) {
                self.endpoint = .address(address)
            } else {
                self.endpoint = .hostPort(host: host, port: port)
            }
        case .unix(let path):
            self.endpoint = .unix(path: path)
        }
    }
}

/// Backends and their shared rotation.
public struct BackendPool: Sendable {
    public let backends: [BackendTarget]
    public let balancer: Balancer
    /// Up/down state from health checks (and failed connects); nil without `[listener.health_check]`.
    public let health: BackendHealth?

    init(_ addresses: [BackendAddress], strategy: BalanceStrategy, healthCheck: HealthCheckSettings?,
         onHealthChange: @escaping @Sendable (_ backend: String, _ isUp: Bool) -> Void) {
        let backends = addresses.map(BackendTarget.init)
        self.backends = backends
        self.balancer = Balancer(strategy: strategy, count: backends.count)
        self.health = healthCheck.map { settings in
            BackendHealth(count: backends.count, fall: settings.fall, rise: settings.rise) { index, isUp in
                onHealthChange(backends[index].text, isUp)
            }
        }
    }

    /// The order in which a new connection tries the backends: the balancer's choice among those that
    /// are up, then on through the others that are up, then (a last resort) the ones marked down.
    func attemptOrder() -> [Int] {
        let count = backends.count
        guard let health else {
            let first = balancer.first()
            return (0..<count).map { (first + $0) % count }
        }
        let up = health.upIndices
        let first = balancer.first(among: up.isEmpty ? Array(0..<count) : up)
        let ring = (0..<count).map { (first + $0) % count }
        return ring.filter { health.isUp($0) } + ring.filter { !health.isUp($0) }
    }
}

/// The immutable settings one listener's new connections run with.
///
/// A reload builds a new `ListenerRuntime`; connections keep the one they were accepted with.
public final class ListenerRuntime: Sendable {
    public let name: String
    public let mode: ListenerMode
    /// Present exactly for `tls` listeners.
    public let tlsContext: TLSServerContext?
    /// The listener's own backends.
    public let pool: BackendPool
    public var backends: [BackendTarget] { pool.backends }
    /// `[listener.health_check]`.
    public let healthCheck: HealthCheckSettings?
    public let handshakeTimeout: TimeAmount
    public let idleTimeout: TimeAmount
    public let halfCloseTimeout: TimeAmount
    public let connectTimeout: TimeAmount
    public let bufferSize: Int
    /// `[[listener.route]]`: SNI pattern (lowercased; exact or "*.suffix") → pool, in file order.
    let routes: [(pattern: String, pool: BackendPool)]
    /// `[listener.backend_tls]`: the client context and the name sent as SNI and verified.
    public let backendTLS: (context: TLSClientContext, serverName: String?)?
    /// PROXY header sent to the backend.
    public let proxyProtocol: ProxyProtocolVersion
    /// Expect a PROXY header from the client.
    public let acceptProxyProtocol: Bool
    /// `proxy_protocol_trusted`: when not empty, the only peers that may connect.
    let proxyProtocolTrusted: [AddressRange]
    /// `allowed_clients`; empty = any client certificate the TLS layer accepted.
    let allowedClients: [ClientMatcher]
    /// Concurrent connections per client (IPv4 address, IPv6 /64); 0 = unlimited.
    public let maxConnectionsPerIP: Int
    /// New connections per second per client; 0 = unlimited.
    public let maxNewConnectionsPerIP: Int
    /// The listener's metric handles (made once by the daemon; `.noop` when none were given).
    public let metrics: ListenerMetrics

    /// Most bytes one socket read takes: half of `buffer_size`, at most 64 KiB.
    var readChunk: Int { min(64 * 1024, max(512, bufferSize / 2)) }

    /// A side is not read while this many bytes read from it are not yet written to the other side; with
    /// one read of at most `readChunk` in flight, at most `buffer_size` bytes per direction are held.
    var directionLimit: Int { max(1, bufferSize - readChunk) }

    var receiveAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 64, initial: min(512, readChunk), maximum: readChunk)
    }

    public init(
        configuration: ListenerConfiguration, tlsContext: TLSServerContext?, backendTLSContext: TLSClientContext? = nil,
        metrics: ListenerMetrics = .noop,
        onHealthChange: @escaping @Sendable (_ backend: String, _ isUp: Bool) -> Void = { _, _ in }
    ) {
        self.metrics = metrics
        let healthCheck = configuration.healthCheck
        self.healthCheck = healthCheck
        let serverName = configuration.backendTLS?.serverName ?? ""
        self.backendTLS = backendTLSContext.map { ($0, serverName.isEmpty ? nil : serverName) }
        self.name = configuration.name
        self.mode = configuration.mode
        self.tlsContext = tlsContext
        self.pool = BackendPool(
            configuration.backends, strategy: configuration.balance, healthCheck: healthCheck,
            onHealthChange: onHealthChange
        )
        let settings = configuration.settings
        self.handshakeTimeout = TimeAmount(settings.handshakeTimeout)
        self.idleTimeout = TimeAmount(settings.idleTimeout)
        self.halfCloseTimeout = TimeAmount(settings.halfCloseTimeout)
        self.connectTimeout = TimeAmount(settings.connectTimeout)
        self.bufferSize = settings.bufferSize
        self.routes = configuration.routes.map { route in
            (
                route.sni.lowercased(),
                BackendPool(
                    route.backends, strategy: configuration.balance, healthCheck: healthCheck,
                    onHealthChange: onHealthChange
                )
            )
        }
        self.allowedClients = configuration.tls?.allowedClients ?? []
        self.proxyProtocol = configuration.proxyProtocol
        self.acceptProxyProtocol = configuration.acceptProxyProtocol
        self.proxyProtocolTrusted = configuration.proxyProtocolTrusted
        self.maxConnectionsPerIP = settings.maxConnectionsPerIP
        self.maxNewConnectionsPerIP = settings.maxNewConnectionsPerIP
    }
}

extension TimeAmount {
    /// Converts a Swift `Duration`, rounding down to nanoseconds.
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

extension ListenerRuntime {
    /// The pool for a connection: an exact route for its SNI, else a wildcard route matching exactly one
    /// label, else the listener's backends.
    func pool(forServerName serverName: String?) -> BackendPool {
        if !routes.isEmpty, let name = serverName?.lowercased() {
            if let exact = routes.first(where: { $0.pattern == name }) { return exact.pool }
            if let dot = name.firstIndex(of: "."), dot != name.startIndex {
                let wildcard = "*" + name[dot...]
                if let match = routes.first(where: { $0.pattern == wildcard }) { return match.pool }
            }
        }
        return pool
    }

    /// Whether `proxy_protocol_trusted` lets a connection from `peer` go on (always when the list is empty).
    func trusts(_ peer: SocketAddress?) -> Bool {
        switch peer {
        case .v4(let address):
            return withUnsafeBytes(of: address.address.sin_addr) { proxyProtocolTrusted.admits($0) }
        case .v6(let address):
            return withUnsafeBytes(of: address.address.sin6_addr) { proxyProtocolTrusted.admits($0) }
        case .unixDomainSocket, nil:
            // No IP address to check: admitted only when every peer is.
            return proxyProtocolTrusted.isEmpty
        }
    }

    /// Whether `allowed_clients` lets this client certificate through.
    func allows(_ certificate: TLSPeerCertificateInfo?) -> Bool {
        guard !allowedClients.isEmpty else { return true }
        guard let certificate else { return false }
        return allowedClients.contains { matcher in
            switch matcher {
            case .commonName(let name):
                return certificate.commonName == name
            case .dnsName(let name):
                return certificate.dnsNames.contains { $0.lowercased() == name.lowercased() }
            case .uri(let uri):
                return certificate.uris.contains(uri)
            }
        }
    }
}

extension ListenerRuntime {
    /// Every pool (the listener's and its routes'), for the health checkers.
    public var allPools: [BackendPool] {
        [pool] + routes.map(\.pool)
    }
}
