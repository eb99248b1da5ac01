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

    /// The address the socket is bound to (with the real port when the config said 0).
    public var localAddress: SocketAddress? { channel.localAddress }

    private init(name: String, runtime: NIOLockedValueBox<ListenerRuntime>, channel: Channel) {
        self.name = name
        self.runtime = runtime
        self.channel = channel
    }

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
        let bufferSize = runtime.bufferSize
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: max(1, bufferSize / 2), high: bufferSize))
            .childChannelInitializer { channel in
                let runtime = box.withLockedValue { $0 }
                return channel.eventLoop.makeCompletedFuture {
                    try Self.setUp(channel: channel, runtime: runtime, tracker: tracker, observer: observer)
                }
            }
        return bootstrap.bind(host: host, port: port).map { channel in
            ProxyListener(name: runtime.name, runtime: box, channel: channel)
        }
    }

    /// Installs the per-connection pipeline, or refuses the connection over `max_connections`.
    private static func setUp(
        channel: Channel, runtime: ListenerRuntime, tracker: ConnectionTracker, observer: any ConnectionObserver
    ) throws {
        let connection = ProxyConnection(listener: runtime, tracker: tracker, observer: observer, channel: channel)
        guard tracker.admit(connection.handle) else {
            observer.connectionClosed(
                ProxyConnection.rejectedSummary(listener: runtime.name, channel: channel, reason: .maxConnections)
            )
            // A failed initializer makes NIO close the accepted socket at once.
            throw ConnectionRefused()
        }
        let pipeline = channel.pipeline.syncOperations
        if let tlsContext = runtime.tlsContext {
            try pipeline.addHandler(TLSHandler(context: tlsContext))
        }
        try pipeline.addHandler(ClientSideHandler(connection: connection))
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
