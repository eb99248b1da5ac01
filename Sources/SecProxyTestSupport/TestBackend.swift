import Foundation
import NIOCore
import NIOPosix

/// Counters of a test backend, readable from any thread.
public final class BackendStats: @unchecked Sendable {
    private let lock = NSLock()
    private var _accepted = 0
    private var _active = 0
    private var _bytesReceived = 0
    private var _bytesSent = 0
    private var _finsReceived = 0

    public init() {}

    /// Connections accepted so far.
    public var connectionCount: Int { lock.withLock { _accepted } }
    /// Connections open now.
    public var activeConnections: Int { lock.withLock { _active } }
    /// Bytes received from all connections.
    public var bytesReceived: Int { lock.withLock { _bytesReceived } }
    /// Bytes written (and flushed) to all connections.
    public var bytesSent: Int { lock.withLock { _bytesSent } }
    /// Half-closes (FIN without close) seen from peers.
    public var finsReceived: Int { lock.withLock { _finsReceived } }

    func opened() {
        lock.withLock {
            _accepted += 1; _active += 1
        }
    }
    func closed() { lock.withLock { _active -= 1 } }
    func received(_ count: Int) { lock.withLock { _bytesReceived += count } }
    func sent(_ count: Int) { lock.withLock { _bytesSent += count } }
    func fin() { lock.withLock { _finsReceived += 1 } }
}

/// A TCP server on 127.0.0.1 (port 0 unless given) whose connections are served by a handler made per
/// connection. Half-closure is allowed, so handlers see `ChannelEvent.inputClosed`.
public class TestBackend: @unchecked Sendable {
    /// Counters.
    public let stats: BackendStats
    /// The bound port.
    public let port: Int
    /// The bound host.
    public let host: String
    private let serverChannel: Channel
    private let lock = NSLock()
    private var stopped = false

    /// Binds and starts serving.
    /// - Parameters:
    ///   - host: the address to bind.
    ///   - port: 0 for a free one.
    ///   - makeHandler: a new handler for each accepted connection.
    init(
        host: String = "127.0.0.1",
        port: Int = 0,
        makeHandler: @escaping @Sendable (BackendStats) -> ChannelHandler
    ) throws {
        let stats = BackendStats()
        self.stats = stats
        let registry = ChildRegistry()
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                registry.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(makeHandler(stats))
                }
            }
        self.serverChannel = try bootstrap.bind(host: host, port: port).wait()
        self.host = host
        self.port = serverChannel.localAddress?.port ?? 0
        self.registry = registry
    }

    private let registry: ChildRegistry

    /// `127.0.0.1:PORT`, as written in a config's `backends`.
    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Connections accepted so far.
    public var connectionCount: Int { stats.connectionCount }
    /// Connections open now.
    public var activeConnections: Int { stats.activeConnections }
    /// Bytes received from all connections.
    public var bytesReceived: Int { stats.bytesReceived }

    /// Stops listening and closes every open connection (idempotent).
    public func stop() {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        try? serverChannel.close().wait()
        for child in registry.all() {
            try? child.close().wait()
        }
    }

    deinit { stop() }
}

/// Open child channels of a server, so `stop()` can close them.
final class ChildRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var channels: [ObjectIdentifier: Channel] = [:]

    func add(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        lock.withLock { channels[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.lock.withLock { _ = self?.channels.removeValue(forKey: id) }
        }
    }

    func all() -> [Channel] { lock.withLock { Array(channels.values) } }
}

// MARK: - Echo

/// Echoes every byte back. On the peer's FIN it sends what is left, then its own FIN. It reads only while the
/// peer keeps up (no unbounded buffering).
public final class EchoServer: TestBackend, @unchecked Sendable {
    /// Starts an echo server on `host` (port 0).
    /// - Parameter replyAfterFIN: hold everything until the peer's FIN, then send it all back and FIN (shows that a
    ///   half-closed connection still carries bytes the other way).
    public init(host: String = "127.0.0.1", replyAfterFIN: Bool = false) throws {
        try super.init(host: host) { stats in EchoHandler(stats: stats, replyAfterFIN: replyAfterFIN) }
    }
}

final class EchoHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let stats: BackendStats
    private let replyAfterFIN: Bool
    private var held: [ByteBuffer] = []
    private var lastWrite: EventLoopFuture<Void>?
    private var readHeld = false

    init(stats: BackendStats, replyAfterFIN: Bool) {
        self.stats = stats
        self.replyAfterFIN = replyAfterFIN
    }

    func channelActive(context: ChannelHandlerContext) {
        stats.opened()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stats.closed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let count = buffer.readableBytes
        stats.received(count)
        if replyAfterFIN {
            held.append(buffer)
            return
        }
        let stats = self.stats
        let write = context.write(wrapOutboundOut(buffer))
        write.whenSuccess { stats.sent(count) }
        lastWrite = write
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        // Backpressure: no new read while the echo cannot be written.
        if context.channel.isWritable {
            context.read()
        } else {
            readHeld = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, readHeld {
            readHeld = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            stats.fin()
            for buffer in held {
                let count = buffer.readableBytes
                let stats = self.stats
                let write = context.write(wrapOutboundOut(buffer))
                write.whenSuccess { stats.sent(count) }
                lastWrite = write
            }
            held = []
            context.flush()
            let pending = lastWrite ?? context.eventLoop.makeSucceededVoidFuture()
            pending.assumeIsolated().whenComplete { _ in
                context.close(mode: .output, promise: nil)
                // Both directions are done now.
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

// MARK: - Streaming

/// Writes a byte pattern to each connection: either `totalBytes` then a FIN, or without end until
/// `stopStreaming()` (then a FIN). Whatever the peer sends is counted and dropped. Byte `i` of a connection's
/// stream is `i % 251`.
public final class StreamingServer: TestBackend, @unchecked Sendable {
    private let control: StreamControl

    /// How much each connection receives.
    public enum Amount: Sendable {
        /// This many bytes, then FIN.
        case bytes(Int)
        /// Until `stopStreaming()`, then FIN.
        case untilStopped
    }

    /// Starts a streaming server on `host` (port 0).
    public init(host: String = "127.0.0.1", amount: Amount) throws {
        let control = StreamControl()
        self.control = control
        try super.init(host: host) { stats in StreamHandler(stats: stats, amount: amount, control: control) }
    }

    /// Makes `.untilStopped` connections finish with a FIN.
    public func stopStreaming() { control.stop() }
}

/// The pattern `StreamingServer` sends: byte `i` is `i % 251`.
public func streamPattern(offset: Int, count: Int) -> [UInt8] {
    (0..<count).map { UInt8((offset + $0) % 251) }
}

final class StreamControl: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    private var waiting: [() -> Void] = []

    var isStopped: Bool { lock.withLock { stopped } }

    func stop() {
        let callbacks = lock.withLock { () -> [() -> Void] in
            stopped = true
            defer { waiting = [] }
            return waiting
        }
        callbacks.forEach { $0() }
    }

    /// Calls `callback` (on any thread) once stopped; immediately when already stopped.
    func whenStopped(_ callback: @escaping () -> Void) {
        let now = lock.withLock { () -> Bool in
            if stopped { return true }
            waiting.append(callback)
            return false
        }
        if now { callback() }
    }
}

final class StreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let stats: BackendStats
    private let amount: StreamingServer.Amount
    private let control: StreamControl
    private var offset = 0
    private var finished = false
    private let chunkSize = 16384

    init(stats: BackendStats, amount: StreamingServer.Amount, control: StreamControl) {
        self.stats = stats
        self.amount = amount
        self.control = control
    }

    func channelActive(context: ChannelHandlerContext) {
        stats.opened()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        control.whenStopped {
            loopBound.eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.pump(context: context)
            }
        }
        pump(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stats.closed()
        finished = true
        context.fireChannelInactive()
    }

    private func pump(context: ChannelHandlerContext) {
        guard !finished else { return }
        let limit: Int?
        switch amount {
        case .bytes(let total): limit = total
        case .untilStopped: limit = control.isStopped ? offset : nil
        }
        while context.channel.isWritable {
            let count = min(chunkSize, (limit ?? Int.max) - offset)
            if count <= 0 { break }
            var buffer = context.channel.allocator.buffer(capacity: count)
            buffer.writeBytes(streamPattern(offset: offset, count: count))
            offset += count
            let stats = self.stats
            context.write(wrapOutboundOut(buffer)).whenSuccess { stats.sent(count) }
        }
        context.flush()
        if let limit, offset >= limit {
            finished = true
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)))
                .assumeIsolated().whenComplete { _ in context.close(mode: .output, promise: nil) }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        stats.received(unwrapInboundIn(data).readableBytes)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            stats.fin()
            if finished { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

// MARK: - Sink

/// Reads and drops everything (counting it); answers the peer's FIN with its own and closes, unless
/// `closeOnFIN` is false: then it keeps its side open and silent until the peer closes.
public final class SinkServer: TestBackend, @unchecked Sendable {
    /// Starts a sink server on `host` (port 0).
    public init(host: String = "127.0.0.1", closeOnFIN: Bool = true) throws {
        try super.init(host: host) { stats in SinkHandler(stats: stats, closeOnFIN: closeOnFIN) }
    }
}

final class SinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let stats: BackendStats
    private let closeOnFIN: Bool

    init(stats: BackendStats, closeOnFIN: Bool) {
        self.stats = stats
        self.closeOnFIN = closeOnFIN
    }

    func channelActive(context: ChannelHandlerContext) {
        stats.opened()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stats.closed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        stats.received(unwrapInboundIn(data).readableBytes)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            stats.fin()
            if closeOnFIN { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
