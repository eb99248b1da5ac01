import NIOCore

/// Closing: half-close with close_notify, full close bounded by the shutdown timeout, abort.
extension TLSHandler {
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

    func closeOutput(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
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

    func closeAll(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
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
    func startShutdownTimer(context: ChannelHandlerContext) {
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

    func cancelShutdownTimer() {
        self.shutdownTimer?.cancel()
        self.shutdownTimer = nil
    }

    /// Closes the channel without ceremony; pending close promises complete with it.
    func closeNow(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
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
    func sendCloseNotify(context: ChannelHandlerContext) {
        guard self.encryptPendingWrites(context: context), let connection = self.connection else { return }
        connection.shutdown()
        let written = context.eventLoop.makePromise(of: Void.self)
        self.writeOutbound(context: context, promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in
            self.closeNotifyWritten(context: context)
        }
    }

    func closeNotifyWritten(context: ChannelHandlerContext) {
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
}
