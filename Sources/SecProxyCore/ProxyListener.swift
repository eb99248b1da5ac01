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
    private let group: EventLoopGroup

    /// The address the socket is bound to (with the real port when the config said 0).
    public var localAddress: SocketAddress? { channel.localAddress }

    private init(
        name: String, runtime: NIOLockedValueBox<ListenerRuntime>, channel: Channel, limiter: PerIPLimiter,
        descriptor: CInt, group: EventLoopGroup
    ) {
        self.group = group
        self.descriptor = descriptor
        self.name = name
        self.runtime = runtime
        self.channel = channel
        self.limiter = limiter
    }

    /// How long accepting pauses after accept() failed for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    static let acceptBackoff: TimeAmount = .milliseconds(250)

    /// The listening socket's descriptor (for systemd's file-descriptor store); owned by the channel.
    public let descriptor: CInt

    /// Starts accepting on `descriptor`, a bound and listening socket (see `ListeningSocket`), which
    /// the listener then owns.
    /// - Parameters:
    ///   - group: the event loops that serve the connections.
    ///   - tracker: the process-wide connection count (`max_connections`) and drain.
    ///   - observer: receives every connection's summary and the handshake/connect events.
    public static func start(
        descriptor: CInt, runtime: ListenerRuntime, group: EventLoopGroup, tracker: ConnectionTracker,
        observer: any ConnectionObserver
    ) -> EventLoopFuture<ProxyListener> {
        let box = NIOLockedValueBox(runtime)
        let limiter = PerIPLimiter()
        let name = runtime.name
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptPauseHandler(pause: acceptBackoff) { error in
                            observer.acceptFailed(listener: name, error: error, backoff: acceptBackoff)
                        }
                    )
                }
            }
            .childChannelInitializer { channel in
                let runtime = box.withLockedValue { $0 }
                return channel.eventLoop.makeCompletedFuture {
                    try Self.setUp(
                        channel: channel, runtime: runtime, limiter: limiter, tracker: tracker, observer: observer
                    )
                }
            }
        return bootstrap.withBoundSocket(descriptor).map { channel in
            ProxyListener(
                name: runtime.name, runtime: box, channel: channel, limiter: limiter, descriptor: descriptor,
                group: group
            )
        }
    }

    /// Installs the first handlers of an accepted connection: the PROXY decoder when one is expected, and
    /// the admission handler, which applies the limits and builds the rest of the pipeline.
    private static func setUp(
        channel: Channel, runtime: ListenerRuntime, limiter: PerIPLimiter, tracker: ConnectionTracker,
        observer: any ConnectionObserver
    ) throws {
        // Set here, synchronously, rather than as the bootstrap's child options, which are applied through
        // a chain of futures per option; and per connection, so that a reload's buffer_size applies to new
        // connections. (Backpressure is the data path's own, from write completions: the channels'
        // writability is not used.)
        if let options = channel.syncOptions {
            try options.setOption(.allowRemoteHalfClosure, value: true)
            try options.setOption(.socketOption(.tcp_nodelay), value: 1)
            try options.setOption(.maxMessagesPerRead, value: 1)
            try options.setOption(.recvAllocator, value: runtime.receiveAllocator)
        }
        let pipeline = channel.pipeline.syncOperations
        if runtime.acceptProxyProtocol {
            try pipeline.addHandler(ProxyProtocolDecoder())
        }
        try pipeline.addHandler(
            AdmissionHandler(runtime: runtime, tracker: tracker, limiter: limiter, observer: observer)
        )
    }

    /// Makes new connections use `runtime` (reload); open ones keep theirs.
    public func replaceRuntime(_ runtime: ListenerRuntime) {
        self.runtime.withLockedValue { $0 = runtime }
    }

    /// Stops accepting, lets connections already taken off the socket finish their setup, then closes
    /// the listening socket (never `shutdown()`, so a copy in systemd's store keeps queueing connections
    /// for the next process). Open connections are untouched.
    ///
    /// NIO sets an accepted connection up on its own event loop and then, back on the listener's loop,
    /// closes it if the listener is no longer active: closing at once would reset connections a client
    /// already had accepted.
    public func close() -> EventLoopFuture<Void> {
        let listenerLoop = channel.eventLoop
        let loops = Array(group.makeIterator())
        return channel.setOption(.autoRead, value: false)
            .flatMap { () -> EventLoopFuture<Void> in
                EventLoopFuture.andAllComplete(loops.map { $0.submit {} }, on: listenerLoop)
            }
            .flatMap { listenerLoop.submit {} }
            .flatMapError { _ in listenerLoop.makeSucceededVoidFuture() }
            .flatMap { self.channel.close() }
    }
}

/// Pauses accepting for a while when `accept()` fails for lack of resources (EMFILE, ENFILE, ENOBUFS,
/// ENOMEM), instead of spinning on the listening socket, which stays readable.
///
/// NIO's `AcceptBackoffHandler` does not help here: after a failed accept NIO keeps its read pending and
/// never asks the pipeline for the next read, so the level-triggered socket fires again at once.
/// Turning `autoRead` off unregisters the socket for reading; turning it back on re-registers it.
final class AcceptPauseHandler: ChannelInboundHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    private let pause: TimeAmount
    private let onPause: (IOError) -> Void
    private var resume: Scheduled<Void>?

    init(pause: TimeAmount, onPause: @escaping (IOError) -> Void) {
        self.pause = pause
        self.onPause = onPause
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let ioError = error as? IOError,
            [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(ioError.errnoCode)
        else {
            context.fireErrorCaught(error)
            return
        }
        guard resume == nil else { return }
        onPause(ioError)
        let channel = context.channel
        channel.setOption(.autoRead, value: false).whenComplete { _ in }
        resume = context.eventLoop.assumeIsolated().scheduleTask(in: pause) { [weak self] in
            self?.resume = nil
            channel.setOption(.autoRead, value: true).whenComplete { _ in }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        resume?.cancel()
        resume = nil
    }
}

@available(*, unavailable)
extension AcceptPauseHandler: Sendable {}
