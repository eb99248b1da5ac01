import NIOCore
import NIOEmbedded

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Stands in for the TCP socket under an `EmbeddedChannel`'s pipeline, with the socket semantics of NIO's
/// `SocketChannel` that the data path depends on:
/// - a write completes only when the peer took it (at once with `peerReads`, else on `drain()`);
/// - `close(mode: .output)` waits for the queued writes, then sends the FIN; on a channel whose input
///   already ended it becomes a full close that fails the queued writes (NIO escalates);
/// - the peer's FIN arrives as `ChannelEvent.inputClosed` — or, when our output is already shut, as a
///   full close (NIO escalates then too);
/// - bytes and the FIN are delivered only when a read was asked for, one chunk per read, with autoRead
///   asking again after each burst. Delivery runs on the event loop, like a real socket's wake-ups:
///   call `EmbeddedEventLoop.run()` to let the network move.
final class SimulatedSocket: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The peer reads everything at once; false: writes stay queued until `drain()`.
    var peerReads: Bool
    /// Everything the peer took, in order.
    private(set) var taken = ByteBuffer()
    /// What the peer took since the last `takeNew()`.
    private var fresh = ByteBuffer()
    /// Our FIN reached the peer.
    private(set) var finSent = false
    /// The channel is closed (the peer sees a FIN after what it took).
    private(set) var closed = false
    /// The peer's FIN was delivered.
    private(set) var inputClosed = false
    /// Reads asked for through the pipeline.
    private(set) var readRequests = 0
    /// Bytes written but not taken by the peer yet.
    var queuedBytes: Int { unsent.reduce(0) { $0 + $1.0.readableBytes } }

    private var context: ChannelHandlerContext?
    private var unsent: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var flushedCount = 0
    private var outputClose: EventLoopPromise<Void>??
    private var inbound: [ByteBuffer] = []
    private var peerFIN = false
    private var readPending = false
    private var deliveryScheduled = false

    init(peerReads: Bool = true) {
        self.peerReads = peerReads
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        autoRead()
    }

    // MARK: - Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closed, !finSent, outputClose == nil else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        unsent.append((unwrapOutboundIn(data), promise))
    }

    func flush(context: ChannelHandlerContext) {
        flushedCount = unsent.count
        if peerReads { drain() }
    }

    /// The peer takes up to `limit` flushed bytes (whole writes only).
    func drain(upTo limit: Int = .max) {
        var budget = limit
        while flushedCount > 0, let (buffer, promise) = unsent.first, buffer.readableBytes <= budget {
            unsent.removeFirst()
            flushedCount -= 1
            budget -= buffer.readableBytes
            var copy = buffer
            taken.writeBuffer(&copy)
            copy = buffer
            fresh.writeBuffer(&copy)
            promise?.succeed()
        }
        if unsent.isEmpty, let pending = outputClose {
            outputClose = nil
            shutOutput(pending)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .output:
            if finSent || outputClose != nil {
                promise?.fail(ChannelError.outputClosed)
            } else if inputClosed {
                // NIO: an output close on a channel whose input ended is a full close; queued writes fail.
                fullClose(promise)
            } else if unsent.isEmpty {
                shutOutput(promise)
            } else {
                outputClose = .some(promise)
            }
        case .all:
            fullClose(promise)
        case .input:
            promise?.fail(ChannelError.operationUnsupported)
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    private func shutOutput(_ promise: EventLoopPromise<Void>?) {
        finSent = true
        promise?.succeed()
    }

    private func fullClose(_ promise: EventLoopPromise<Void>?) {
        guard !closed, let context else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        closed = true
        finSent = true
        let failed = unsent
        unsent = []
        flushedCount = 0
        for (_, writePromise) in failed { writePromise?.fail(ChannelError.ioOnClosedChannel) }
        if let pending = outputClose {
            outputClose = nil
            pending?.succeed()
        }
        context.close(mode: .all, promise: promise)
    }

    /// The bytes the peer took since the last call (for `Wire`).
    func takeNew() -> ByteBuffer? {
        guard fresh.readableBytes > 0 else { return nil }
        defer { fresh.clear() }
        return fresh
    }

    // MARK: - Inbound

    func read(context: ChannelHandlerContext) {
        readRequests += 1
        readPending = true
        scheduleDelivery()
    }

    /// The peer sends `bytes` (delivered on a later read).
    func peerSends(_ bytes: ByteBuffer) {
        inbound.append(bytes)
        scheduleDelivery()
    }

    /// The peer half-closes (delivered after its bytes).
    func peerSendsFIN() {
        peerFIN = true
        scheduleDelivery()
    }

    /// The peer resets the connection: an ECONNRESET, then the channel closes.
    func peerResets() {
        guard !closed, let context else { return }
        context.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        fullClose(nil)
    }

    private func scheduleDelivery() {
        guard !deliveryScheduled, let context else { return }
        deliveryScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.deliveryScheduled = false
            self.deliver()
        }
    }

    private func deliver() {
        guard readPending, !closed, let context else { return }
        if !inbound.isEmpty {
            readPending = false
            context.fireChannelRead(wrapInboundOut(inbound.removeFirst()))
            context.fireChannelReadComplete()
            autoRead()
        } else if peerFIN, !inputClosed {
            readPending = false
            inputClosed = true
            context.fireChannelReadComplete()
            if finSent {
                fullClose(nil)
            } else {
                context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            }
        }
    }

    /// autoRead: after activation and after each burst, ask the pipeline for the next read.
    private func autoRead() {
        guard !readPending, !closed, !inputClosed, let context else { return }
        context.channel.read()
    }
}

/// Connects two simulated sockets, as a network between two peers' channels would: what one side's socket
/// took arrives at the other, and a FIN follows its bytes.
struct Wire {
    let a: SimulatedSocket
    let b: SimulatedSocket
    private final class Relayed {
        var finToA = false
        var finToB = false
    }
    private let relayed = Relayed()

    init(_ a: SimulatedSocket, _ b: SimulatedSocket) {
        self.a = a
        self.b = b
    }

    /// Moves bytes and FINs across until nothing moves; `settle` runs the event loop in between.
    func pump(settle: () -> Void) {
        var moved = true
        while moved {
            moved = false
            settle()
            if let bytes = a.takeNew() {
                b.peerSends(bytes)
                moved = true
            }
            if let bytes = b.takeNew() {
                a.peerSends(bytes)
                moved = true
            }
            if a.finSent, !relayed.finToB {
                relayed.finToB = true
                b.peerSendsFIN()
                moved = true
            }
            if b.finSent, !relayed.finToA {
                relayed.finToA = true
                a.peerSendsFIN()
                moved = true
            }
        }
        settle()
    }
}
