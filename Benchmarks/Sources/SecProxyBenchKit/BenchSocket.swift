import NIOCore

/// Stands in for the TCP socket at the head of an `EmbeddedChannel`'s pipeline, with only what the
/// benchmarks need of one, so that what is measured is the handlers above it:
/// - a write completes when it is flushed (the peer takes everything at once); what was written is kept
///   in `outbox` for a peer (`keepsWrites`) or dropped, and counted either way;
/// - bytes in `inbox` arrive only while a read is pending, one buffer per read burst (secproxy's
///   `maxMessagesPerRead` is 1), and, as NIO's autoRead does, the pipeline is asked for the next read
///   after each burst — so the data path's backpressure (`GlueHandler.read`) is honoured.
///
/// Its queues are `CircularBuffer`s that keep their capacity, so in steady state it allocates nothing
/// itself: the mallocs a benchmark counts are the handlers'.
package final class BenchSocket: ChannelDuplexHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    /// Keep what is written in `outbox` (for a peer, or a benchmark that replays it); false: count only.
    package var keepsWrites: Bool
    /// What was written and kept, oldest first.
    package var outbox = CircularBuffer<ByteBuffer>(initialCapacity: 16)
    /// What the peer sent and this side has not read yet.
    package var inbox = CircularBuffer<ByteBuffer>(initialCapacity: 16)
    /// Bytes written (kept or not).
    package private(set) var bytesWritten = 0
    /// Bytes delivered up the pipeline.
    package private(set) var bytesRead = 0
    /// Whether the pipeline asked for a read that has not been served.
    package private(set) var readPending = false
    package private(set) var closed = false
    /// `close(mode: .output)` was done: our FIN is sent.
    package private(set) var outputShut = false

    private var context: ChannelHandlerContext?
    private var unflushedPromises: [EventLoopPromise<Void>] = []
    private var completing = false

    package init(keepsWrites: Bool) {
        self.keepsWrites = keepsWrites
        self.unflushedPromises.reserveCapacity(8)
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    package func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        // autoRead: the first read is asked for when the channel becomes active.
        context.channel.read()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        closed = true
        context.fireChannelInactive()
    }

    // MARK: - Outbound

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        bytesWritten += buffer.readableBytes
        if keepsWrites { outbox.append(buffer) }
        if let promise { unflushedPromises.append(promise) }
    }

    package func flush(context: ChannelHandlerContext) {
        // A completion may write and flush again: the outer loop completes those too.
        guard !completing else { return }
        completing = true
        var index = 0
        while index < unflushedPromises.count {
            unflushedPromises[index].succeed()
            index += 1
        }
        unflushedPromises.removeAll(keepingCapacity: true)
        completing = false
    }

    package func read(context: ChannelHandlerContext) {
        readPending = true
    }

    package func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        flush(context: context)
        switch mode {
        case .output:
            // Our FIN (every write is already taken).
            outputShut = true
            promise?.succeed()
        case .all, .input:
            context.close(mode: mode, promise: promise)
        }
    }

    // MARK: - Inbound

    /// Delivers what is in `inbox` while reads are asked for; returns whether anything was delivered.
    @discardableResult
    package func deliver() -> Bool {
        guard let context else { return false }
        var delivered = false
        while readPending, !closed, let buffer = inbox.popFirst() {
            readPending = false
            delivered = true
            bytesRead += buffer.readableBytes
            context.fireChannelRead(wrapInboundOut(buffer))
            context.fireChannelReadComplete()
            if !closed { context.channel.read() }
        }
        return delivered
    }

    /// The peer's FIN: the input ends (`ChannelEvent.inputClosed`, as NIO reports it with
    /// `allowRemoteHalfClosure`); on a channel whose output is already shut, NIO closes it instead.
    package func peerSendsFIN() {
        guard let context, !closed else { return }
        if outputShut {
            context.close(mode: .all, promise: nil)
        } else {
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    /// Moves what `self` wrote to `peer`'s inbox, and what `peer` wrote to `self`'s, until neither
    /// moves anything (both must keep their writes).
    package func shuttle(with peer: BenchSocket) {
        var moved = true
        while moved {
            moved = false
            while let buffer = outbox.popFirst() {
                peer.inbox.append(buffer)
                moved = true
            }
            while let buffer = peer.outbox.popFirst() {
                inbox.append(buffer)
                moved = true
            }
            if peer.deliver() { moved = true }
            if deliver() { moved = true }
        }
    }
}

@available(*, unavailable)
extension BenchSocket: Sendable {}
