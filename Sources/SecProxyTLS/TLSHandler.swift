import NIOCore

/// Terminates (server) or originates (client) TLS on a channel: ciphertext below, plaintext above.
///
/// Events it produces for the handlers above:
/// - `TLSEvent.handshakeCompleted` once, before any application data;
/// - `ChannelEvent.inputClosed` once, when the peer sent close_notify or its TCP input ended after
///   the handshake (the channel needs `allowRemoteHalfClosure`); the handler never closes on it;
/// - exactly one `TLSError` through `errorCaught` on a fatal TLS failure, after which it closes the
///   channel. A TCP EOF before the handshake finished is the error "handshake eof".
///
/// Outbound: writes before the handshake completes are queued (with their promises) and sent after
/// it; a write's promise completes when its ciphertext is written. `close(mode: .output)` sends
/// close_notify, then the FIN once that is written; `close(mode: .all)` after the handshake sends
/// close_notify and closes when it is written, or after `shutdownTimeout` when the peer does not take
/// it. Queued writes are never dropped by a graceful close. `TLSOutboundEvent.abort` closes at once.
///
/// Reads: after the handshake, what OpenSSL writes back on its own while reading (alerts refusing
/// renegotiation, KeyUpdate answers, tickets) is counted until written; the peer is not read while more
/// than `maximumOwnOutbound` of it is unsent, so it cannot pile up against a peer that sends but never
/// reads. Application data written from above is not counted: its backpressure is the caller's.
public final class TLSHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// Where the connection stands.
    enum State {
        /// No handshake yet: a server waits for the ClientHello, a client for the channel to be active.
        case idle
        case handshaking
        /// Handshake done; both directions open on our side.
        case active
        /// close_notify is being written; the FIN (`close(mode: .output)`) follows.
        case outputClosing
        /// close_notify and FIN sent; reading goes on.
        case outputClosed
        /// Full close requested: close_notify is being written, then the channel closes.
        case closing
        /// Closed, failed or closing without ceremony: nothing more goes through.
        case closed
    }

    let role: TLSConnection.Role
    var connection: TLSConnection?
    var state: State = .idle
    /// `ChannelEvent.inputClosed` was fired (or the input is otherwise done).
    var inputClosed = false
    /// An error went up the pipeline (ours or one from below): no "handshake eof" on top of it.
    var errorFired = false
    /// Plaintext writes not yet encrypted, with their promises.
    var pendingWrites = CircularBuffer<(ByteBuffer, EventLoopPromise<Void>?)>(initialCapacity: 4)
    /// Promise(s) of writes encrypted into the outbound buffer, completed with its channel write.
    var outboundPromise: EventLoopPromise<Void>?
    /// Promise of a pending `close(mode: .output)`.
    var outputClosePromise: EventLoopPromise<Void>?
    /// `close(mode: .output)` arrived during the handshake; performed when it completes.
    var outputCloseDeferred = false
    /// Promise of a pending `close(mode: .all)`.
    var closePromise: EventLoopPromise<Void>?
    /// Whether application data went up since the last `channelReadComplete`.
    var deliveredData = false
    /// A read asked for while too much of OpenSSL's own output was unsent; issued once it is written.
    var readHeld = false
    /// Ciphertext OpenSSL produced while reading after the handshake, not yet written.
    var ownOutboundPending = 0
    /// The peer is not read while more than this of OpenSSL's own output is unsent.
    public static let maximumOwnOutbound = 16 * 1024
    /// How long a full close waits for close_notify to be written before closing anyway.
    let shutdownTimeout: TimeAmount
    var shutdownTimer: Scheduled<Void>?

    /// The default `shutdownTimeout`.
    public static let defaultShutdownTimeout: TimeAmount = .seconds(5)

    /// A server-side handler.
    /// - Parameters:
    ///   - context: the server context.
    ///   - shutdownTimeout: how long `close(mode: .all)` waits for close_notify to be written.
    public init(context: TLSServerContext, shutdownTimeout: TimeAmount = TLSHandler.defaultShutdownTimeout) {
        self.role = .server(context)
        self.shutdownTimeout = shutdownTimeout
    }

    /// A client-side handler; starts the handshake once the channel is active.
    ///
    /// - Parameters:
    ///   - context: the client context.
    ///   - serverName: sent as SNI (unless an IP address) and, with trust roots, verified against the
    ///     server certificate; nil = the context's `verifyHostname`.
    ///   - shutdownTimeout: how long `close(mode: .all)` waits for close_notify to be written.
    public init(
        context: TLSClientContext, serverName: String?,
        shutdownTimeout: TimeAmount = TLSHandler.defaultShutdownTimeout
    ) {
        self.role = .client(context, serverName: serverName ?? context.configuration.verifyHostname)
        self.shutdownTimeout = shutdownTimeout
    }

    var isClient: Bool {
        switch self.role {
        case .server: return false
        case .client: return true
        }
    }

    // MARK: - Lifecycle

    public func handlerAdded(context: ChannelHandlerContext) {
        do {
            self.connection = try TLSConnection(role: self.role, allocator: context.channel.allocator)
        } catch {
            let tlsError = (error as? TLSError) ?? TLSError(reason: "\(error)")
            self.state = .closed
            self.errorFired = true
            context.fireErrorCaught(tlsError)
            context.close(mode: .all, promise: nil)
            return
        }
        if self.isClient && context.channel.isActive {
            self.startHandshake(context: context)
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.state = .closed
        self.cancelShutdownTimer()
        self.failPendingWrites(ChannelError.ioOnClosedChannel)
    }

    public func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if self.isClient, case .idle = self.state {
            self.startHandshake(context: context)
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        let previous = self.state
        self.state = .closed
        self.cancelShutdownTimer()
        switch previous {
        case .idle, .handshaking:
            // The peer went away mid-handshake (a local close sets `.closed` before this).
            if !self.errorFired {
                self.errorFired = true
                context.fireErrorCaught(TLSError.own("handshake eof", detail: "connection closed during the handshake"))
            }
        case .active, .outputClosing, .outputClosed, .closing, .closed:
            break
        }
        self.failPendingWrites(ChannelError.ioOnClosedChannel)
        self.outboundPromise?.fail(ChannelError.ioOnClosedChannel)
        self.outboundPromise = nil
        // The channel is closed, which is what a pending close asked for.
        self.outputClosePromise?.succeed(())
        self.outputClosePromise = nil
        self.closePromise?.succeed(())
        self.closePromise = nil
        self.connection?.discardInbound()
        context.fireChannelInactive()
    }

    // MARK: - Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let connection = self.connection else { return }
        switch self.state {
        case .idle, .handshaking:
            connection.receive(self.unwrapInboundIn(data))
            self.state = .handshaking
            self.runHandshake(context: context)
        case .active, .outputClosing, .outputClosed:
            guard !self.inputClosed else { return }  // nothing counts after close_notify
            connection.receive(self.unwrapInboundIn(data))
            self.readLoop(context: context)
        case .closing, .closed:
            // A full close is under way: whoever closed does not want more data.
            return
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        // Handshake flights, alerts, KeyUpdate answers: one write per read burst.
        switch self.state {
        case .active, .outputClosing, .outputClosed:
            self.writeOwnOutbound(context: context)
        case .idle, .handshaking, .closing, .closed:
            self.writeOutbound(context: context, promise: nil)
        }
        let delivered = self.deliveredData
        self.deliveredData = false
        context.fireChannelReadComplete()
        guard !delivered else { return }
        switch self.state {
        case .idle, .handshaking, .active, .outputClosing, .outputClosed:
            // Ciphertext came in but no plaintext went up: with autoRead off nobody would ask for more.
            if context.channel.isActive,
                let autoRead = try? context.channel.syncOptions?.getOption(ChannelOptions.autoRead),
                !autoRead
            {
                self.read(context: context)
            }
        case .closing, .closed:
            break
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // TCP input ended.
        switch self.state {
        case .idle, .handshaking:
            self.fail(
                context: context,
                error: TLSError.own("handshake eof", detail: "peer closed its output during the handshake")
            )
        case .active, .outputClosing, .outputClosed:
            // Without close_notify this may be a truncation; the layers above see a half-close either way.
            self.fireInputClosedOnce(context: context)
        case .closing, .closed:
            break
        }
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.errorFired = true
        context.fireErrorCaught(error)
    }

    /// Writes what OpenSSL produced while reading, counting it until it is written.
    func writeOwnOutbound(context: ChannelHandlerContext) {
        guard self.outboundPromise == nil, let ciphertext = self.connection?.takeOutbound() else {
            self.writeOutbound(context: context, promise: nil)
            return
        }
        let count = ciphertext.readableBytes
        self.ownOutboundPending += count
        let written = context.eventLoop.makePromise(of: Void.self)
        context.write(self.wrapOutboundOut(ciphertext), promise: written)
        context.flush()
        written.futureResult.assumeIsolated().whenComplete { _ in
            self.ownOutboundPending -= count
            if self.readHeld && self.ownOutboundPending <= Self.maximumOwnOutbound {
                self.readHeld = false
                context.read()
            }
        }
    }

    // MARK: - Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch self.state {
        case .idle, .handshaking, .active:
            self.pendingWrites.append((self.unwrapOutboundIn(data), promise))
        case .outputClosing, .outputClosed, .closing:
            promise?.fail(ChannelError.outputClosed)
        case .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    public func flush(context: ChannelHandlerContext) {
        switch self.state {
        case .idle, .handshaking:
            // Sent when the handshake completes.
            break
        case .active:
            guard self.encryptPendingWrites(context: context) else { return }
            self.writeOutbound(context: context, promise: nil)
        case .outputClosing, .outputClosed, .closing, .closed:
            break
        }
    }

    public func read(context: ChannelHandlerContext) {
        switch self.state {
        case .idle, .handshaking:
            // Handshake flights are small, and the peer must be read for the handshake to end.
            context.read()
        case .active, .outputClosing, .outputClosed, .closing, .closed:
            if self.ownOutboundPending <= Self.maximumOwnOutbound {
                context.read()
            } else {
                self.readHeld = true
            }
        }
    }
}

@available(*, unavailable)
extension TLSHandler: Sendable {}
