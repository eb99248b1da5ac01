import NIOCore

/// The admin socket is one more socket a client can hold: bounds what it may send and how slowly.
///
/// First in the pipeline (raw bytes, before the HTTP decoder): from the accept, or from the end of the
/// previous response, a complete request head must arrive within `readTimeout` (an absolute deadline:
/// trickling bytes does not extend it) and within `maxHeadBytes`. Otherwise the client gets `408` or `431`
/// and the connection is closed. The HTTP handler says where a request starts and ends with
/// `AdminRequestGuard.Event`s sent outbound.
final class AdminRequestGuard: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Sent outbound by the HTTP handler.
    enum Event {
        /// A whole request head arrived: the deadline and the byte count stop.
        case headReceived
        /// The response was written and the connection stays open: they start again for the next request.
        case responseSent
    }

    private enum State {
        /// Waiting for a request head: bytes counted against the limit, under the deadline.
        case waitingForHead(received: Int)
        /// A request is being handled.
        case handling
        /// Refused: nothing more goes up.
        case refused
    }

    private let maxHeadBytes: Int
    private let readTimeout: TimeAmount
    private var state: State = .waitingForHead(received: 0)
    private var deadline: Scheduled<Void>?

    init(maxHeadBytes: Int, readTimeout: TimeAmount) {
        self.maxHeadBytes = maxHeadBytes
        self.readTimeout = readTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armDeadline(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armDeadline(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .waitingForHead(let received):
            let total = received + unwrapInboundIn(data).readableBytes
            guard total <= maxHeadBytes else {
                refuse(context: context, status: "431 Request Header Fields Too Large", line: "request head too large")
                return
            }
            state = .waitingForHead(received: total)
            context.fireChannelRead(data)
        case .handling:
            context.fireChannelRead(data)
        case .refused:
            return
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let event = event as? Event else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch (event, state) {
        case (.headReceived, .waitingForHead):
            state = .handling
            deadline?.cancel()
            deadline = nil
        case (.responseSent, .handling):
            state = .waitingForHead(received: 0)
            armDeadline(context: context)
        case (_, .refused), (.headReceived, .handling), (.responseSent, .waitingForHead):
            break
        }
        promise?.succeed()
    }

    private func armDeadline(context: ChannelHandlerContext) {
        deadline?.cancel()
        let context = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.value.eventLoop.assumeIsolated().scheduleTask(in: readTimeout) { [weak self] in
            self?.deadline = nil
            self?.refuse(context: context.value, status: "408 Request Timeout", line: "request not received in time")
        }
    }

    /// Answers with `status` (the HTTP encoder is above us: raw bytes) and closes.
    private func refuse(context: ChannelHandlerContext, status: String, line: String) {
        guard case .waitingForHead = state else { return }
        state = .refused
        deadline?.cancel()
        deadline = nil
        let body = line + "\n"
        let text =
            "HTTP/1.1 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        let buffer = context.channel.allocator.buffer(string: text)
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(buffer))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension AdminRequestGuard: Sendable {}
