import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SecProxyTLS

/// A bound listening socket whose accepted connections run with the listener's current runtime.
///
/// The runtime can be replaced (reload) without touching the socket; connections keep the runtime
/// they were accepted with.
public final class ProxyListener: Sendable {
    public let name: String
    private let runtime: NIOLockedValueBox<ListenerRuntime>
    private let channel: Channel
    /// Per-client counts; kept across reloads.
    public let limiter: PerIPLimiter

    /// The address the socket is bound to (with the real port when the config said 0).
    public var localAddress: SocketAddress? { channel.localAddress }

    private init(name: String, runtime: NIOLockedValueBox<ListenerRuntime>, channel: Channel, limiter: PerIPLimiter) {
        self.name = name
        self.runtime = runtime
        self.channel = channel
        self.limiter = limiter
    }

    /// How long accepting pauses after accept() failed for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    static let acceptBackoff: TimeAmount = .milliseconds(250)

    /// Binds `host:port` and starts accepting.
    /// - Parameters:
    ///   - group: the event loops that serve the connections.
    ///   - tracker: the process-wide connection count (`max_connections`) and drain.
    ///   - observer: receives every connection's summary and the handshake/connect events.
    public static func bind(
        host: String, port: Int, runtime: ListenerRuntime, group: EventLoopGroup, tracker: ConnectionTracker,
        observer: any ConnectionObserver
    ) -> EventLoopFuture<ProxyListener> {
        let box = NIOLockedValueBox(runtime)
        let limiter = PerIPLimiter()
        let name = runtime.name
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                // Without it, accept() failing with EMFILE would spin on the still-readable socket.
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptBackoffHandler(shouldForwardIOErrorCaught: false) { error in
                            observer.acceptFailed(listener: name, error: error, backoff: acceptBackoff)
                            return acceptBackoff
                        }
                    )
                }
            }
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelInitializer { channel in
                let runtime = box.withLockedValue { $0 }
                return channel.eventLoop.makeCompletedFuture {
                    try Self.setUp(
                        channel: channel, runtime: runtime, limiter: limiter, tracker: tracker, observer: observer
                    )
                }
            }
        return bootstrap.bind(host: host, port: port).map { channel in
            ProxyListener(name: runtime.name, runtime: box, channel: channel, limiter: limiter)
        }
    }

    /// Installs the per-connection pipeline, or refuses the connection over `max_connections` or a
    /// per-client limit (a failed initializer makes NIO close the accepted socket at once: no handshake,
    /// no backend).
    private static func setUp(
        channel: Channel, runtime: ListenerRuntime, limiter: PerIPLimiter, tracker: ConnectionTracker,
        observer: any ConnectionObserver
    ) throws {
        func refuse(_ reason: CloseReason) -> ConnectionRefused {
            observer.connectionClosed(
                ProxyConnection.rejectedSummary(listener: runtime.name, channel: channel, reason: reason)
            )
            return ConnectionRefused()
        }
        let connection = ProxyConnection(listener: runtime, tracker: tracker, observer: observer, channel: channel)
        guard tracker.admit(connection.handle) else {
            throw refuse(.maxConnections)
        }
        if runtime.maxConnectionsPerIP > 0 || runtime.maxNewConnectionsPerIP > 0,
            let address = channel.remoteAddress, let key = PerIPLimiter.Key(address)
        {
            let decision = limiter.admit(
                key, maxConcurrent: runtime.maxConnectionsPerIP, maxPerSecond: runtime.maxNewConnectionsPerIP
            )
            switch decision {
            case .admitted:
                connection.onFinish = { limiter.release(key) }
            case .overConcurrent:
                tracker.remove(connection.handle)
                throw refuse(.perIPLimit)
            case .overRate:
                tracker.remove(connection.handle)
                throw refuse(.rateLimited)
            }
        }
        do {
            // Per connection, so that a reload's buffer_size applies to new connections.
            if let options = channel.syncOptions {
                try options.setOption(.writeBufferWaterMark, value: runtime.writeBufferWaterMark)
                try options.setOption(.recvAllocator, value: runtime.receiveAllocator)
            }
            let pipeline = channel.pipeline.syncOperations
            if let tlsContext = runtime.tlsContext {
                try pipeline.addHandler(TLSHandler(context: tlsContext))
            }
            try pipeline.addHandler(ClientSideHandler(connection: connection))
        } catch {
            // The handlers never saw the channel: end the connection's accounting here.
            connection.close(.error, detail: "\(error)")
            connection.clientBecameInactive()
            throw error
        }
    }

    /// Makes new connections use `runtime` (reload); open ones keep theirs.
    public func replaceRuntime(_ runtime: ListenerRuntime) {
        self.runtime.withLockedValue { $0 = runtime }
    }

    /// Closes the listening socket (never `shutdown()`); open connections are untouched.
    public func close() -> EventLoopFuture<Void> {
        channel.close()
    }
}

struct ConnectionRefused: Error {}
