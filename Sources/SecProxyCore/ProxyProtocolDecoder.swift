import NIOCore

/// The user inbound event `ProxyProtocolDecoder` fires once a client's PROXY header is complete.
public enum ProxyProtocolEvent: Sendable, Equatable {
    /// The header the balancer in front sent; its addresses replace the socket's for logs and limits
    /// (`.unknown`: keep the socket's).
    case received(ProxyProtocolHeader)
}

/// Why a client's PROXY header was refused: malformed, too long, or the connection ended before it was complete.
/// `ProxyProtocolDecoder` fires it through `errorCaught` before closing (reason `proxy_protocol_invalid`).
public struct ProxyProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was wrong, for the log.
    public var reason: String

    public init(reason: String) {
        self.reason = reason
    }

    public var description: String { "invalid PROXY protocol header: \(reason)" }
}

/// The first handler of an accepted client pipeline when `accept_proxy_protocol = true` (SPEC §3).
///
/// Buffers the connection's first bytes until a PROXY v1/v2 header is complete, then fires
/// `ProxyProtocolEvent.received`, forwards the bytes that followed the header in the same reads (the start of
/// the TLS handshake or of the application stream) as one `channelRead` + `channelReadComplete`, and removes
/// itself, so later bytes pass at no cost. A malformed header, or an end of input before a complete header,
/// fires `ProxyProtocolError` through `errorCaught` and closes the channel.
///
/// At most `ProxyProtocolHeader.maximumV2Length` bytes are ever held: the parser calls a header invalid before
/// more would be needed. Works with autoRead on, and with autoRead off by asking for the next read itself
/// while the header is incomplete.
public final class ProxyProtocolDecoder: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private enum State {
        /// Still reading the header; the bytes received so far (nil before the first read).
        case awaitingHeader(ByteBuffer?)
        /// The header was read; the handler is leaving the pipeline and passes anything through meanwhile.
        case passingThrough
        /// The header was refused and the channel is closing; later reads are dropped.
        case failed
    }

    private var state: State = .awaitingHeader(nil)

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .passingThrough:
            context.fireChannelRead(data)
        case .failed:
            break
        case .awaitingHeader(let received):
            var bytes = unwrapInboundIn(data)
            if var received {
                // Release our reference first so the append does not copy on write.
                state = .awaitingHeader(nil)
                received.writeBuffer(&bytes)
                bytes = received
            }
            decode(context: context, bytes: bytes)
        }
    }

    private func decode(context: ChannelHandlerContext, bytes: ByteBuffer) {
        switch ProxyProtocolHeader.parse(bytes) {
        case .needMoreData:
            // The parser only asks for more below the v2 cap; this guards the memory bound if that ever changes.
            guard bytes.readableBytes <= ProxyProtocolHeader.maximumV2Length else {
                fail(context: context, reason: "no complete header within \(ProxyProtocolHeader.maximumV2Length) bytes")
                return
            }
            state = .awaitingHeader(bytes)
        case .invalid(let reason):
            fail(context: context, reason: reason)
        case .header(let header, let consumed):
            state = .passingThrough
            var rest = bytes
            rest.moveReaderIndex(forwardBy: consumed)
            context.fireUserInboundEventTriggered(ProxyProtocolEvent.received(header))
            if rest.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(rest))
                context.fireChannelReadComplete()
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        switch state {
        case .awaitingHeader:
            // Nothing was forwarded, so no handler after us will ask for more: with autoRead off, we must.
            if let autoRead = try? context.channel.syncOptions?.getOption(ChannelOptions.autoRead), !autoRead {
                context.read()
            }
        case .passingThrough:
            context.fireChannelReadComplete()
        case .failed:
            break
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .awaitingHeader = state, case ChannelEvent.inputClosed = event {
            // Half-closure allowed: the client sent FIN before a complete header.
            fail(context: context, reason: "the connection ended before a complete header")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if case .awaitingHeader = state {
            state = .failed
            context.fireErrorCaught(ProxyProtocolError(reason: "the connection ended before a complete header"))
        }
        context.fireChannelInactive()
    }

    private func fail(context: ChannelHandlerContext, reason: String) {
        state = .failed
        context.fireErrorCaught(ProxyProtocolError(reason: reason))
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ProxyProtocolDecoder: Sendable {}
