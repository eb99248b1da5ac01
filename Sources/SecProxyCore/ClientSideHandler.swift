import NIOCore
import SecProxyTLS

/// The last handler of a client channel (after the TLS handler on `tls` listeners): hands every
/// event to its `ProxyConnection`, and holds reads back while the backend cannot take the data.
final class ClientSideHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let connection: ProxyConnection

    init(connection: ProxyConnection) {
        self.connection = connection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        connection.clientAttached(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connection.clientBecameInactive()
    }

    func channelActive(context: ChannelHandlerContext) {
        connection.clientActive(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.clientRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connection.clientReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case TLSEvent.handshakeCompleted(let info):
            connection.handshakeCompleted(info)
        case ChannelEvent.inputClosed:
            connection.clientInputClosed(context)
        case ProxyProtocolEvent.received(let header):
            connection.proxyHeaderReceived(header)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.clientError(error)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        connection.clientWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.clientBecameInactive()
    }

    func read(context: ChannelHandlerContext) {
        if connection.shouldReadClient() { context.read() }
    }
}

@available(*, unavailable)
extension ClientSideHandler: Sendable {}

/// The only handler of a backend channel: hands its events to the `ProxyConnection` that dialled it.
final class BackendSideHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let connection: ProxyConnection
    /// Set while the handler is in a pipeline.
    private(set) var context: ChannelHandlerContext?

    init(connection: ProxyConnection) {
        self.connection = connection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard connection.isCurrentBackend(self) else { return }
        connection.backendRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard connection.isCurrentBackend(self) else { return }
        connection.backendReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event, connection.isCurrentBackend(self) {
            connection.backendInputClosedEvent()
        } else if case TLSEvent.handshakeCompleted = event {
            connection.backendHandshakeCompleted(self)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if connection.isHandshakingBackend(self) {
            connection.backendHandshakeFailed(self, error: error)
            return
        }
        guard connection.isCurrentBackend(self) else { return }
        connection.backendError(error)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        guard connection.isCurrentBackend(self) else { return }
        connection.backendWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if connection.isHandshakingBackend(self) {
            connection.backendHandshakeFailed(self, error: ChannelError.eof)
            return
        }
        guard connection.isCurrentBackend(self) else { return }
        connection.backendBecameInactive()
    }

    func read(context: ChannelHandlerContext) {
        if connection.isHandshakingBackend(self) {
            // The backend TLS handshake needs to read.
            context.read()
        } else if connection.isCurrentBackend(self) {
            if connection.shouldReadBackend() { context.read() }
        } else {
            // Not wired yet: remember the wish; `backendConnected` issues the read.
            _ = connection.shouldReadBackend()
        }
    }
}

@available(*, unavailable)
extension BackendSideHandler: Sendable {}
