import NIOCore
import SecProxyTLS

/// The last handler of each of a connection's two channels (after the TLS handler where there is
/// one): hands the channel's events to its `Connection` and asks it before every read, so that a
/// side is read only while the other can take the bytes. The same type serves both sides.
///
/// Holds its connection until the handler leaves the pipeline; the connection drops its contexts
/// when it finishes, which breaks the cycle.
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let side: ConnectionSide
    private var connection: Connection?
    /// `channelInactive` (or the handler's removal) was passed on.
    private var inactiveReported = false

    init(side: ConnectionSide, connection: Connection) {
        self.side = side
        self.connection = connection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        connection?.glueAdded(context, side: side)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A channel that failed to register is torn down without `channelInactive`.
        reportInactive()
        connection = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if side == .client { connection?.clientActive() }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        reportInactive()
        context.fireChannelInactive()
    }

    private func reportInactive() {
        guard !inactiveReported else { return }
        inactiveReported = true
        connection?.channelInactive(side)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection?.read(unwrapInboundIn(data), from: side)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connection?.readComplete(from: side)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let connection else { return }
        switch event {
        case ChannelEvent.inputClosed:
            connection.inputClosed(side)
        case ChannelEvent.outputClosed:
            break
        case TLSEvent.handshakeCompleted(let info):
            connection.handshakeCompleted(info)
        case ProxyProtocolEvent.received(let header):
            connection.proxyHeaderReceived(header)
        case is ConnectionShutdownEvent:
            connection.shutdown()
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection?.errorCaught(error, on: side)
    }

    func read(context: ChannelHandlerContext) {
        guard let connection else { return context.read() }
        if connection.shouldRead(side) { context.read() }
    }
}

/// Fired on a client channel to end its connection with reason `shutdown` (the drain ran out).
public struct ConnectionShutdownEvent: Sendable {
    public init() {}
}

@available(*, unavailable)
extension GlueHandler: Sendable {}
