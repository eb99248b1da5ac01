import NIOCore
import SecProxyTLS

/// For `Benchmarks/` only: the smallest public door into the data path, so that the separate benchmark
/// package, which sees only public API, can drive a real `Connection` and its two `GlueHandler`s (and the
/// TLS handler, for a `tls` runtime) on channels it made itself, such as `EmbeddedChannel`s whose head
/// handler stands in for the socket. The daemon never calls it; it is not a stable API.
public enum DataPathBenchmark {
    /// Sets `client` up as the listener sets up an accepted connection of `runtime` — the PROXY decoder
    /// when `accept_proxy_protocol` is on, then the admission handler, which adds the TLS handler and the
    /// client glue — with `backend` as the one backend the connection dials: handed over, already
    /// connected, as soon as the connection asks for a backend (after the TLS handshake in `tls` mode).
    ///
    /// Call it before `client` is active; activating `client` (e.g. `EmbeddedChannel.connect`) starts the
    /// connection. The backend glue is added to `backend`'s pipeline when it is handed over.
    ///
    /// - Parameters:
    ///   - client: the accepted channel, not yet active.
    ///   - backend: the backend channel, already active.
    ///   - runtime: the listener's settings (its first backend names `backend` in the summary line).
    ///   - tracker: counts the connection against `max_connections`.
    ///   - limiter: the per-client limits.
    ///   - observer: receives the connection's events and its summary.
    public static func setUpConnection(
        client: Channel, backend: Channel, runtime: ListenerRuntime, tracker: ConnectionTracker,
        limiter: PerIPLimiter, observer: any ConnectionObserver
    ) throws {
        let pipeline = client.pipeline.syncOperations
        if runtime.acceptProxyProtocol {
            try pipeline.addHandler(ProxyProtocolDecoder())
        }
        let target = runtime.backends.first
        try pipeline.addHandler(
            AdmissionHandler(
                runtime: runtime, tracker: tracker, limiter: limiter, observer: observer,
                makeConnector: { _ in GivenBackendConnector(channel: backend, target: target) }
            )
        )
    }
}

/// Hands out one channel, already connected, as the backend of one connection.
private final class GivenBackendConnector: BackendConnecting {
    private var channel: Channel?
    private let target: BackendTarget?

    init(channel: Channel, target: BackendTarget?) {
        self.channel = channel
        self.target = target
    }

    func start(pool: BackendPool, onOutcome: @escaping (BackendConnectOutcome) -> Void) {
        guard let channel, let target = target ?? pool.backends.first else {
            return onOutcome(.failed(.backendUnavailable, detail: "no backend channel"))
        }
        self.channel = nil
        onOutcome(.connected(channel, target: target, index: 0))
    }

    func cancel() {
        channel = nil
    }
}

@available(*, unavailable)
extension GivenBackendConnector: Sendable {}
