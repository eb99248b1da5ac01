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

    private let role: TLSConnection.Role
    private var connection: TLSConnection?
    private var state: State = .idle
    /// `ChannelEvent.inputClosed` was fired (or the input is otherwise done).
    private var inputClosed = false
    /// An error went up the pipeline (ours or one from below): no "handshake eof" on top of it.
    private var errorFired = false
    /// Plaintext writes not yet encrypted, with their promises.
    private var pendingWrites = CircularBuffer<(ByteBuffer, EventLoopPromise<Void>?)>(initialCapacity: 4)
    /// Promise(s) of writes encrypted into the outbound buffer, completed with its channel write.
    private var outboundPromise: EventLoopPromise<Void>?
    /// Promise of a pending `close(mode: .output)`.
    private var outputClosePromise: EventLoopPromise<Void>?
    /// `close(mode: .output)` arrived during the handshake; performed when it completes.
    private var outputCloseDeferred = false
    /// Promise of a pending `close(mode: .all)`.
    private var closePromise: EventLoopPromise<Void>?
    /// Whether application data went up since the last `channelReadComplete`.
    private var deliveredData = false
    /// A read asked for while too much of OpenSSL's own output was unsent; issued once it is written.
    private var readHeld = false
    /// Ciphertext OpenSSL produced while reading after the handshake, not yet written.
    private var ownOutboundPending = 0
    /// The peer is not read while more than this of OpenSSL's own output is unsent.
    public static let maximumOwnOutbound = 16 * 1024
    /// How long a full close waits for close_notify to be written before closing anyway.
    private let shutdownTimeout: TimeAmount
    private var shutdownTimer: Scheduled<Void>?

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

    private var isClient: Bool {
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
    private func writeOwnOutbound(context: ChannelHandlerContext) {
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

    public func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let tlsEvent = event as? TLSOutboundEvent else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch tlsEvent {
        case .abort:
            self.closeNow(context: context, promise: nil)
            promise?.succeed(())
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .input:
            context.close(mode: .input, promise: promise)
        case .output:
            self.closeOutput(context: context, promise: promise)
        case .all:
            self.closeAll(context: context, promise: promise)
        }
    }

    private func closeOutput(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch self.state {
        case .idle, .handshaking:
            self.outputCloseDeferred = true
            self.chain(promise, into: &self.outputClosePromise, context: context)
        case .active:
            self.state = .outputClosing
            self.chain(promise, into: &self.outputClosePromise, context: context)
            self.sendCloseNotify(context: context)
        case .outputClosing:
            self.chain(promise, into: &self.outputClosePromise, context: context)
        case .outputClosed:
            promise?.succeed(())
        case .closing:
            // The full close covers the output.
            self.chain(promise, into: &self.closePromise, context: context)
        case .closed:
            promise?.fail(ChannelError.alreadyClosed)
        }
    }

    private func closeAll(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch self.state {
        case .idle, .handshaking:
            self.closeNow(context: context, promise: promise)
        case .active:
            self.state = .closing
            self.chain(promise, into: &self.closePromise, context: context)
            self.startShutdownTimer(context: context)
            self.sendCloseNotify(context: context)
        case .outputClosing:
            // close_notify is already on its way; close when it is written.
            self.state = .closing
            self.chain(promise, into: &self.closePromise, context: context)
            self.startShutdownTimer(context: context)
        case .outputClosed:
            self.closeNow(context: context, promise: promise)
        case .closing:
            self.chain(promise, into: &self.closePromise, context: context)
        case .closed:
            context.close(mode: .all, promise: promise)
        }
    }

    /// A peer that does not read would hold a graceful full close forever: close anyway after
    /// `shutdownTimeout`.
    private func startShutdownTimer(context: ChannelHandlerContext) {
        guard self.shutdownTimer == nil else { return }
        self.shutdownTimer = context.eventLoop.assumeIsolated().scheduleTask(in: self.shutdownTimeout) {
            self.shutdownTimer = nil
            switch self.state {
            case .closing:
                self.closeNow(context: context, promise: nil)
            case .idle, .handshaking, .active, .outputClosing, .outputClosed, .closed:
                break
            }
        }
    }

    private func cancelShutdownTimer() {
        self.shutdownTimer?.cancel()
        self.shutdownTimer = nil
    }

    /// Closes the channel without ceremony; pending close promises complete with it.
    private func closeNow(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        self.state = .closed
        self.cancelShutdownTimer()
        self.failPendingWrites(ChannelError.ioOnClosedChannel)
        self.chain(promise, into: &self.closePromise, context: context)
        self.chain(self.outputClosePromise, into: &self.closePromise, context: context)
        self.outputClosePromise = nil
        let closePromise = self.closePromise
        self.closePromise = nil
        // Completed by the channel's closing, whoever closes it first (the peer's reset may win
        // against a close_notify write, and then our close would fail with "already closed").
        if let closePromise {
            context.channel.closeFuture.cascade(to: closePromise)
        }
        context.close(mode: .all, promise: nil)
    }

    /// Encrypts what is queued, queues close_notify, and writes it all; when the write completes,
    /// goes on with the output or full close.
    private func sendCloseNotify(context: ChannelHandlerContext) {
        guard self.encryptPendingWrites(context: context), let connection = self.connection else { return }
        connection.shutdown()
        let written = context.eventLoop.makePromise(of: Void.self)
        self.writeOutbound(context: context, promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in
            self.closeNotifyWritten(context: context)
        }
    }

    private func closeNotifyWritten(context: ChannelHandlerContext) {
        switch self.state {
        case .outputClosing:
            self.state = .outputClosed
            let promise = self.outputClosePromise
            self.outputClosePromise = nil
            context.close(mode: .output, promise: promise)
        case .closing:
            self.closeNow(context: context, promise: nil)
        case .idle, .handshaking, .active, .outputClosed, .closed:
            // Failed or closed meanwhile; whoever did that completed the promises.
            break
        }
    }

    // MARK: - Handshake

    private func startHandshake(context: ChannelHandlerContext) {
        self.state = .handshaking
        self.runHandshake(context: context)
        // The client's first flight is not answering a read: send it now.
        self.writeOutbound(context: context, promise: nil)
    }

    private func runHandshake(context: ChannelHandlerContext) {
        guard let connection = self.connection else { return }
        switch connection.doHandshake() {
        case .incomplete:
            break
        case .failed(let error):
            self.fail(context: context, error: error)
        case .complete:
            self.state = .active
            // Writes queued during the handshake go first, then whatever the event triggers.
            guard self.encryptPendingWrites(context: context) else { return }
            context.fireUserInboundEventTriggered(TLSEvent.handshakeCompleted(connection.sessionInfo()))
            switch self.state {
            case .active:
                self.writeOutbound(context: context, promise: nil)
                if self.outputCloseDeferred {
                    self.outputCloseDeferred = false
                    self.state = .outputClosing
                    self.sendCloseNotify(context: context)
                }
            case .outputClosing, .outputClosed:
                // The event handler closed the output itself; that close covers a deferred one.
                self.outputCloseDeferred = false
            case .idle, .handshaking, .closing, .closed:
                return
            }
            // Application data that came in the same read as the last handshake message.
            self.readLoop(context: context)
        }
    }

    // MARK: - Data

    /// Decrypts everything decryptable and passes it up, one record per `fireChannelRead`.
    private func readLoop(context: ChannelHandlerContext) {
        guard let connection = self.connection else { return }
        while connection.canRead {
            switch self.state {
            case .active, .outputClosing, .outputClosed:
                break
            case .idle, .handshaking, .closing, .closed:
                return
            }
            if self.inputClosed { return }
            switch connection.read(allocator: context.channel.allocator) {
            case .data(let plaintext):
                self.deliveredData = true
                context.fireChannelRead(self.wrapInboundOut(plaintext))
            case .wantRead:
                return
            case .closeNotify:
                connection.discardInbound()
                self.fireInputClosedOnce(context: context)
                return
            case .failed(let error):
                self.fail(context: context, error: error)
                return
            }
        }
    }

    private func fireInputClosedOnce(context: ChannelHandlerContext) {
        guard !self.inputClosed else { return }
        self.inputClosed = true
        context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
    }

    /// Encrypts every queued write into the outbound buffer, collecting their promises.
    /// - Returns: false when encryption failed (the connection is then failed and closed).
    private func encryptPendingWrites(context: ChannelHandlerContext) -> Bool {
        guard let connection = self.connection else { return false }
        while let (plaintext, promise) = self.pendingWrites.popFirst() {
            if let error = connection.write(plaintext) {
                promise?.fail(error)
                self.fail(context: context, error: error)
                return false
            }
            self.chain(promise, into: &self.outboundPromise, context: context)
        }
        return true
    }

    /// Writes and flushes the outbound ciphertext, if any, completing the collected write promises
    /// (and `promise`) with it.
    private func writeOutbound(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        var promise = promise
        if let collected = self.outboundPromise {
            self.outboundPromise = nil
            if let promise {
                promise.futureResult.cascade(to: collected)
            } else {
                promise = collected
            }
        }
        guard let ciphertext = self.connection?.takeOutbound() else {
            promise?.succeed(())
            return
        }
        context.write(self.wrapOutboundOut(ciphertext), promise: promise)
        context.flush()
    }

    // MARK: - Failure

    /// Fires `error` (once per connection), sends any alert, and closes.
    private func fail(context: ChannelHandlerContext, error: TLSError) {
        switch self.state {
        case .closed:
            return
        case .idle, .handshaking, .active, .outputClosing, .outputClosed, .closing:
            break
        }
        self.state = .closed
        self.failPendingWrites(error)
        self.connection?.discardInbound()
        // The alert OpenSSL queued (if any) goes out before the close.
        self.writeOutbound(context: context, promise: nil)
        if !self.errorFired {
            self.errorFired = true
            context.fireErrorCaught(error)
        }
        if let outputClosePromise = self.outputClosePromise {
            self.outputClosePromise = nil
            outputClosePromise.fail(error)
        }
        if let closePromise = self.closePromise {
            self.closePromise = nil
            context.channel.closeFuture.cascade(to: closePromise)
        }
        context.close(mode: .all, promise: nil)
    }

    private func failPendingWrites(_ error: Error) {
        while let (_, promise) = self.pendingWrites.popFirst() {
            promise?.fail(error)
        }
    }

    /// Makes `promise` complete with `slot` (filling the slot when empty).
    private func chain(
        _ promise: EventLoopPromise<Void>?,
        into slot: inout EventLoopPromise<Void>?,
        context: ChannelHandlerContext
    ) {
        guard let promise else { return }
        if let existing = slot {
            existing.futureResult.cascade(to: promise)
        } else {
            slot = promise
        }
    }
}

@available(*, unavailable)
extension TLSHandler: Sendable {}
