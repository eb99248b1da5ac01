import NIOCore
import NIOHTTP1
import NIOPosix
import SecProxyConfig
import Synchronization

/// The `[admin]` listener: plaintext HTTP/1.1 serving `AdminEndpoint` (`/metrics`, `/healthz`).
///
/// It is one more socket a client can reach, so it is bounded like the proxy's: at most `maxConnections`
/// at once (more are closed at accept), a request head of at most `maxHeadBytes` that must arrive within
/// `readTimeout` (`AdminRequestGuard`), no request body.
public final class AdminServer: Sendable {
    /// Bounds of the admin socket.
    public struct Limits: Sendable {
        /// Largest request head (request line and headers).
        public var maxHeadBytes = 8 * 1024
        /// From accept (or the previous response) to a complete request head.
        public var readTimeout: TimeAmount = .seconds(5)
        /// Concurrent admin connections; more are closed at once.
        public var maxConnections = 64

        public init() {}
    }

    private let channel: Channel
    private let counter: Counter

    /// The bound address (with the real port when the config said 0).
    public let localAddress: SocketAddress?
    /// What the config asked for.
    public let listen: SocketAddressSpec

    private init(channel: Channel, counter: Counter, listen: SocketAddressSpec) {
        self.channel = channel
        self.counter = counter
        self.localAddress = channel.localAddress
        self.listen = listen
    }

    /// Binds `listen` and serves `endpoint` on `group`.
    public static func start(
        listen: SocketAddressSpec, endpoint: AdminEndpoint, group: EventLoopGroup,
        threadPool: NIOThreadPool = .singleton, limits: Limits = Limits()
    ) async throws -> AdminServer {
        let host = listen.host == "localhost" ? "127.0.0.1" : listen.host
        let address = try SocketAddress(ipAddress: host, port: listen.port)
        let counter = Counter()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard counter.open.wrappingAdd(1, ordering: .relaxed).newValue <= limits.maxConnections else {
                    counter.open.wrappingSubtract(1, ordering: .relaxed)
                    return channel.eventLoop.makeFailedFuture(TooManyConnections())
                }
                channel.closeFuture.whenComplete { _ in counter.open.wrappingSubtract(1, ordering: .relaxed) }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(
                        AdminRequestGuard(maxHeadBytes: limits.maxHeadBytes, readTimeout: limits.readTimeout)
                    )
                    try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                    try pipeline.addHandler(HTTPResponseEncoder())
                    try pipeline.addHandler(HTTPServerPipelineHandler())
                    try pipeline.addHandler(HTTPServerProtocolErrorHandler())
                    try pipeline.addHandler(AdminHTTPHandler(endpoint: endpoint, threadPool: threadPool))
                }
            }
            .bind(to: address)
            .get()
        return AdminServer(channel: channel, counter: counter, listen: listen)
    }

    /// Stops accepting; connections already open finish their request (each is bounded by `readTimeout`).
    public func close() async {
        try? await channel.close()
    }

    /// Admin connections open now.
    var openConnections: Int { counter.open.load(ordering: .relaxed) }

    private final class Counter: Sendable {
        let open = Atomic<Int>(0)
    }

    private struct TooManyConnections: Error {}
}
