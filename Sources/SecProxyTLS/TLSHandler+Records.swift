import NIOCore

/// The handshake, records in and out, and failure.
extension TLSHandler {
    // MARK: - Handshake

    func startHandshake(context: ChannelHandlerContext) {
        self.state = .handshaking
        self.runHandshake(context: context)
        // The client's first flight is not answering a read: send it now.
        self.writeOutbound(context: context, promise: nil)
    }

    func runHandshake(context: ChannelHandlerContext) {
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
    func readLoop(context: ChannelHandlerContext) {
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

    func fireInputClosedOnce(context: ChannelHandlerContext) {
        guard !self.inputClosed else { return }
        self.inputClosed = true
        context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
    }

    /// Encrypts every queued write into the outbound buffer, collecting their promises.
    /// - Returns: false when encryption failed (the connection is then failed and closed).
    func encryptPendingWrites(context: ChannelHandlerContext) -> Bool {
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
    func writeOutbound(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
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
    func fail(context: ChannelHandlerContext, error: TLSError) {
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

    func failPendingWrites(_ error: Error) {
        while let (_, promise) = self.pendingWrites.popFirst() {
            promise?.fail(error)
        }
    }

    /// Makes `promise` complete with `slot` (filling the slot when empty).
    func chain(
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
