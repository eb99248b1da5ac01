import NIOCore
import SecProxyTLS

/// What an admitted connection counts against: its slot in `max_connections` and, when per-client
/// limits apply, its client's count. Given back exactly once, when the connection ends.
struct AdmissionTicket {
    let tracker: ConnectionTracker
    let channel: ObjectIdentifier
    var perClient: (limiter: PerIPLimiter, key: PerIPLimiter.Key)?

    func release() {
        tracker.remove(channel)
        if let perClient { perClient.limiter.release(perClient.key) }
    }
}

/// The first handler of an accepted connection (after the PROXY decoder when `accept_proxy_protocol`
/// is on): decides before any byte is read whether the connection may proceed — `proxy_protocol_trusted`,
/// `max_connections`,
/// then `max_connections_per_ip` / `max_new_connections_per_ip` for the socket's peer — and refuses it
/// at once otherwise (no handshake, no backend). An admitted connection gets the rest of its pipeline
/// (TLS, glue) here.
///
/// With `accept_proxy_protocol` the socket's peer is the balancer in front: the per-client limits
/// apply to the client the PROXY header names (the peer itself for `UNKNOWN`/`LOCAL` headers), when
/// the header arrives; the handler leaves the pipeline then.
final class AdmissionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let runtime: ListenerRuntime
    private let tracker: ConnectionTracker
    private let limiter: PerIPLimiter
    private let observer: any ConnectionObserver
    /// Makes the connector of an admitted connection; nil = real sockets (tests pass their own).
    private let makeConnector: ((Channel) -> any BackendConnecting)?
    /// The admitted connection, while its PROXY header is awaited.
    private var connection: Connection?

    init(
        runtime: ListenerRuntime, tracker: ConnectionTracker, limiter: PerIPLimiter, observer: any ConnectionObserver,
        makeConnector: ((Channel) -> any BackendConnecting)? = nil
    ) {
        self.runtime = runtime
        self.tracker = tracker
        self.limiter = limiter
        self.observer = observer
        self.makeConnector = makeConnector
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        // Every accepted socket counts, refused ones too (`connectionClosed(reason:)` ends each one).
        runtime.metrics.connectionOpened()
        // proxy_protocol_trusted: only the load balancers listed may connect at all.
        guard runtime.trusts(channel.remoteAddress) else {
            return refuse(context: context, reason: .proxyProtocolInvalid, detail: "untrusted source")
        }
        guard tracker.admit(channel) else {
            return refuse(context: context, reason: .maxConnections)
        }
        var ticket = AdmissionTicket(tracker: tracker, channel: ObjectIdentifier(channel))
        if !runtime.acceptProxyProtocol, let peer = channel.remoteAddress {
            switch admitPerClient(peer) {
            case .success(let perClient):
                ticket.perClient = perClient
            case .failure(let refusal):
                ticket.release()
                return refuse(context: context, reason: refusal.reason)
            }
        }
        let connection = Connection(
            runtime: runtime, tracker: tracker, observer: observer, channel: channel, ticket: ticket,
            connector: makeConnector?(channel)
        )
        do {
            let pipeline = context.pipeline.syncOperations
            if let tlsContext = runtime.tlsContext {
                try pipeline.addHandler(TLSHandler(context: tlsContext), position: .after(self))
            }
            try pipeline.addHandler(GlueHandler(side: .client, connection: connection), position: .last)
        } catch {
            ticket.release()
            return refuse(context: context, reason: .error, detail: ErrorText.of(error))
        }
        if runtime.acceptProxyProtocol {
            self.connection = connection
            context.fireChannelActive()
        } else {
            context.fireChannelActive()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ProxyProtocolEvent.received(let header) = event, let connection else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        self.connection = nil
        // UNKNOWN (v1) and LOCAL (v2) name no client: the socket's peer is the one counted then.
        let client: SocketAddress?
        if case .inet(let source, _) = header.addresses {
            client = source
        } else {
            client = context.channel.remoteAddress
        }
        if let client {
            switch admitPerClient(client) {
            case .success(let perClient):
                if let perClient { connection.holdPerClient(limiter: perClient.limiter, key: perClient.key) }
            case .failure(let refusal):
                connection.takeAddresses(from: header)
                connection.abort(refusal.reason)
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private struct Refusal: Error {
        let reason: CloseReason
    }

    /// Applies the per-client limits to `address`; the count taken (nil when no limit applies).
    private func admitPerClient(
        _ address: SocketAddress
    ) -> Result<(limiter: PerIPLimiter, key: PerIPLimiter.Key)?, Refusal> {
        guard runtime.maxConnectionsPerIP > 0 || runtime.maxNewConnectionsPerIP > 0,
            let key = PerIPLimiter.Key(address)
        else { return .success(nil) }
        switch limiter.admit(key, maxConcurrent: runtime.maxConnectionsPerIP, maxPerSecond: runtime.maxNewConnectionsPerIP)
        {
        case .admitted:
            return .success((limiter, key))
        case .overConcurrent:
            return .failure(Refusal(reason: .perIPLimit))
        case .overRate:
            return .failure(Refusal(reason: .rateLimited))
        }
    }

    /// Logs the refused connection's line and closes it; nothing was read from it.
    private func refuse(context: ChannelHandlerContext, reason: CloseReason, detail: String? = nil) {
        runtime.metrics.connectionClosed(reason: reason)
        observer.connectionClosed(
            ConnectionSummary(
                listener: runtime.name, clientAddress: context.channel.remoteAddress, reason: reason,
                detail: detail
            )
        )
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension AdmissionHandler: Sendable {}
