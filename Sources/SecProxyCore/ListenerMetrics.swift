import CoreMetrics

/// The metric handles of one listener (SPEC §3 "Metrics"), made once from a factory passed in, so that the
/// data path never looks a metric up: each method is one atomic update of a handle it already holds (no
/// lock, no dictionary, no allocation; the handshake histogram takes its own short lock, once per handshake).
///
/// The names and labels are API (SPEC §3); the factory decides where the values go (the daemon exports them
/// in the Prometheus format; tests and `noop` drop them). Handles with the same name and labels are the
/// same series in the factory, so the `ListenerMetrics` a reload makes for a listener continues its counters.
public final class ListenerMetrics: Sendable {
    /// The metric names this type reports (SPEC §3); the daemon gives each its help text.
    public enum Name {
        public static let connectionsActive = "secproxy_connections_active"
        public static let connectionsTotal = "secproxy_connections_total"
        public static let handshakesTotal = "secproxy_handshakes_total"
        public static let handshakeFailuresTotal = "secproxy_handshake_failures_total"
        public static let handshakeDurationSeconds = "secproxy_handshake_duration_seconds"
        public static let bytesTotal = "secproxy_bytes_total"
        public static let backendConnectFailuresTotal = "secproxy_backend_connect_failures_total"
    }

    /// The `reason` label of `secproxy_handshake_failures_total`: a small fixed set, so that a client cannot
    /// make new series (OpenSSL's reason strings stay in the log line's `error` field).
    public enum HandshakeFailure: String, Sendable, CaseIterable {
        /// `handshake_timeout` ran out (slowloris, or a stalled client).
        case timeout
        /// The client closed or reset the connection during the handshake.
        case eof
        /// Not TLS at all (plain HTTP to a TLS port, a port scanner): OpenSSL's "wrong version number",
        /// "http request", ...
        case notTLS = "not_tls"
        /// No TLS version both sides accept (`min_version`/`max_version`).
        case protocolVersion = "protocol_version"
        /// No cipher suite, group or signature algorithm in common.
        case noSharedCipher = "no_shared_cipher"
        /// `strict_sni`: an unknown or missing server name.
        case unrecognizedName = "unrecognized_name"
        /// mTLS: no client certificate, one that does not verify or is revoked, or one `allowed_clients` refuses.
        case clientCertificate = "client_certificate"
        /// The client ended the handshake with an alert (e.g. it does not trust the server certificate).
        case peerAlert = "peer_alert"
        /// Anything else.
        case other

        /// The failure a connection's end reports, or nil when it is not a failed handshake.
        ///
        /// - Parameters:
        ///   - reason: the connection's close reason; only `handshake_timeout` and `handshake_failed` are failures.
        ///   - detail: the short TLS reason that came with `handshake_failed` (`TLSError.reason`).
        public init?(closeReason reason: CloseReason, detail: String?) {
            switch reason {
            case .handshakeTimeout:
                self = .timeout
            case .handshakeFailed:
                self = Self.classify(detail ?? "")
            case .clientClosed, .backendClosed, .idleTimeout, .backendUnavailable, .connectTimeout, .maxConnections,
                .perIPLimit, .rateLimited, .proxyProtocolInvalid, .shutdown, .error:
                return nil
            }
        }

        /// Sorts OpenSSL's (and the TLS layer's own) reason strings into the label values.
        static func classify(_ detail: String) -> HandshakeFailure {
            let text = detail.lowercased()
            func has(_ words: String...) -> Bool { words.contains { text.contains($0) } }
            // The order matters. "alert" in a reason means the client sent one: it ended the handshake, except
            // that an alert about the protocol version says which check failed.
            if has("handshake eof", "unexpected eof", "connection reset") { return .eof }
            if has("unrecognized name") { return .unrecognizedName }
            if has("protocol version", "unsupported protocol", "no protocols available", "wrong ssl version") {
                return .protocolVersion
            }
            if has("alert") { return .peerAlert }
            if has("certificate", "not allowed") { return .clientCertificate }
            if has("no shared cipher", "no suitable", "no shared group", "no cipher") { return .noSharedCipher }
            if has("wrong version number", "http request", "https proxy request", "packet length too long",
                "unknown protocol", "record layer failure")
            {
                return .notTLS
            }
            return .other
        }
    }

    /// The OpenSSL version names that have handles made up front (`min_version` is at least 1.2).
    static let tlsVersions = ["TLSv1.2", "TLSv1.3"]

    /// A listener that records nothing: for tests and for runtimes made without a daemon.
    public static let noop = ListenerMetrics(
        listener: "", tls: false, backends: [], factory: NOOPMetricsHandler.instance
    )

    /// The listener's name (the `listener` label).
    public let listener: String
    private let factory: any MetricsFactory
    private let bytesIn: Counter
    private let bytesOut: Counter
    private let active: Meter
    /// `secproxy_connections_total` by `CloseReason.metricsIndex`.
    private let closed: [Counter]
    /// `secproxy_handshakes_total`, `[version index * 2 + (resumed ? 1 : 0)]`; empty on plain listeners.
    private let handshakes: [Counter]
    /// `secproxy_handshake_failures_total`, in `HandshakeFailure.allCases` order; empty on plain listeners.
    private let handshakeFailures: [Counter]
    /// nil on plain listeners.
    private let handshakeDuration: Timer?
    /// `secproxy_backend_connect_failures_total` for the backends the listener had when this was made.
    private let backendFailures: [String: Counter]

    /// Makes every handle of one listener.
    ///
    /// - Parameters:
    ///   - listener: the listener's name.
    ///   - tls: whether it is a `tls` listener (plain listeners get no handshake series).
    ///   - backends: every backend it may dial (its own and its routes'), as written in the config.
    ///   - factory: where the handles come from; never the global `MetricsSystem`.
    public init(listener: String, tls: Bool, backends: [String], factory: any MetricsFactory) {
        self.listener = listener
        self.factory = factory
        let name: (String, String) = ("listener", listener)
        bytesIn = Counter(label: Name.bytesTotal, dimensions: [name, ("direction", "in")], factory: factory)
        bytesOut = Counter(label: Name.bytesTotal, dimensions: [name, ("direction", "out")], factory: factory)
        active = Meter(label: Name.connectionsActive, dimensions: [name], factory: factory)
        closed = CloseReason.allCases.map { reason in
            precondition(CloseReason.allCases[reason.metricsIndex] == reason)
            return Counter(label: Name.connectionsTotal, dimensions: [name, ("reason", reason.rawValue)], factory: factory)
        }
        if tls {
            handshakes = Self.tlsVersions.flatMap { version in
                [false, true].map { resumed in
                    Self.handshakeCounter(listener: listener, version: version, resumed: resumed, factory: factory)
                }
            }
            handshakeFailures = HandshakeFailure.allCases.map { failure in
                precondition(HandshakeFailure.allCases[failure.metricsIndex] == failure)
                return Counter(
                    label: Name.handshakeFailuresTotal, dimensions: [name, ("reason", failure.rawValue)], factory: factory
                )
            }
            handshakeDuration = Timer(label: Name.handshakeDurationSeconds, dimensions: [name], factory: factory)
        } else {
            handshakes = []
            handshakeFailures = []
            handshakeDuration = nil
        }
        var failures: [String: Counter] = [:]
        for backend in backends where failures[backend] == nil {
            failures[backend] = Self.backendFailureCounter(listener: listener, backend: backend, factory: factory)
        }
        backendFailures = failures
    }

    private static func handshakeCounter(
        listener: String, version: String, resumed: Bool, factory: any MetricsFactory
    ) -> Counter {
        Counter(
            label: Name.handshakesTotal,
            dimensions: [("listener", listener), ("tls_version", version), ("resumed", resumed ? "true" : "false")],
            factory: factory
        )
    }

    private static func backendFailureCounter(listener: String, backend: String, factory: any MetricsFactory) -> Counter {
        Counter(
            label: Name.backendConnectFailuresTotal, dimensions: [("listener", listener), ("backend", backend)],
            factory: factory
        )
    }

    // MARK: - Called by the data path

    /// A client connection was accepted. Call once per accepted socket, before any limit may refuse it, and
    /// pair it with exactly one `connectionClosed(reason:)`.
    public func connectionOpened() {
        active.increment()
    }

    /// A client connection ended (where its summary line is emitted, refused ones included): one less
    /// active, one more `secproxy_connections_total{reason}`.
    public func connectionClosed(reason: CloseReason) {
        active.decrement()
        closed[reason.metricsIndex].increment()
    }

    /// `count` application bytes from the client were written to the backend (SPEC: counted when the write
    /// completed). Call as writes complete, not only when the connection ends.
    public func bytesForwarded(in count: Int) {
        bytesIn.increment(by: count)
    }

    /// `count` application bytes were written to the client.
    public func bytesForwarded(out count: Int) {
        bytesOut.increment(by: count)
    }

    /// A TLS handshake completed (and the client was allowed in).
    ///
    /// - Parameters:
    ///   - version: OpenSSL's name, `TLSv1.3`.
    ///   - resumed: whether a session was resumed.
    ///   - seconds: accept to handshake complete.
    public func handshakeCompleted(version: String, resumed: Bool, seconds: Double) {
        // Not a TLS listener: nothing to count.
        guard !handshakes.isEmpty else { return }
        if let index = Self.tlsVersions.firstIndex(of: version) {
            handshakes[index * 2 + (resumed ? 1 : 0)].increment()
        } else {
            // A version without a handle made up front (cannot happen with min_version >= 1.2): the factory
            // returns the same series each time.
            Self.handshakeCounter(listener: listener, version: version, resumed: resumed, factory: factory).increment()
        }
        handshakeDuration?.recordNanoseconds(Int64((seconds * 1e9).rounded()))
    }

    /// A TLS handshake failed or timed out.
    public func handshakeFailed(reason: HandshakeFailure) {
        // Not a TLS listener: nothing to count.
        guard !handshakeFailures.isEmpty else { return }
        handshakeFailures[reason.metricsIndex].increment()
    }

    /// A connect to `backend` (as written in the config) failed.
    public func backendConnectFailed(backend: String) {
        if let counter = backendFailures[backend] {
            counter.increment()
        } else {
            // A backend this listener no longer has (a connection from before a reload): the factory returns
            // the same series it had.
            Self.backendFailureCounter(listener: listener, backend: backend, factory: factory).increment()
        }
    }
}

extension ListenerMetrics.HandshakeFailure {
    /// Position in `allCases`, by an exhaustive switch.
    var metricsIndex: Int {
        switch self {
        case .timeout: return 0
        case .eof: return 1
        case .notTLS: return 2
        case .protocolVersion: return 3
        case .noSharedCipher: return 4
        case .unrecognizedName: return 5
        case .clientCertificate: return 6
        case .peerAlert: return 7
        case .other: return 8
        }
    }
}

extension CloseReason {
    /// Position in `allCases`, by an exhaustive switch: no lookup per closed connection.
    var metricsIndex: Int {
        switch self {
        case .clientClosed: return 0
        case .backendClosed: return 1
        case .idleTimeout: return 2
        case .handshakeTimeout: return 3
        case .handshakeFailed: return 4
        case .backendUnavailable: return 5
        case .connectTimeout: return 6
        case .maxConnections: return 7
        case .perIPLimit: return 8
        case .rateLimited: return 9
        case .proxyProtocolInvalid: return 10
        case .shutdown: return 11
        case .error: return 12
        }
    }
}
