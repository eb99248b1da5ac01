import NIOCore
import SecProxyTLS

/// Performing the state machine's actions on the two channels.
extension Connection {
    func perform(_ action: ConnectionStateMachine.Action) {
        switch action {
        case .none:
            return
        case .write(let buffer, let side):
            stage(buffer, for: side)
        case .flush(let side, let bytes):
            flush(side, bytes: bytes)
        case .read(let side):
            context(for: side)?.read()
        case .closeOutput(let side):
            closeOutput(side)
        case .connectBackend:
            connect()
        case .wireBackend(let wire):
            wireBackend(wire)
        case .close(let close):
            closeChannels(close)
        case .finish:
            finish()
        }
    }

    func context(for side: ConnectionSide) -> ChannelHandlerContext? {
        switch side {
        case .client: return client
        case .backend: return backend
        }
    }

    /// Writes the previously held buffer for `side` and holds `buffer`, so that the flush can carry the
    /// promise of the whole batch on its last write.
    func stage(_ buffer: ByteBuffer, for side: ConnectionSide) {
        switch side {
        case .client:
            if let previous = heldForClient { client?.write(NIOAny(previous), promise: nil) }
            heldForClient = buffer
        case .backend:
            if let previous = heldForBackend { backend?.write(NIOAny(previous), promise: nil) }
            heldForBackend = buffer
        }
    }

    func takeHeld(_ side: ConnectionSide) -> ByteBuffer? {
        switch side {
        case .client:
            defer { heldForClient = nil }
            return heldForClient
        case .backend:
            defer { heldForBackend = nil }
            return heldForBackend
        }
    }

    /// Flushes `side`; the batch's `bytes` count as written once its last write completed.
    func flush(_ side: ConnectionSide, bytes: Int) {
        guard let context = context(for: side), let last = takeHeld(side) else {
            perform(machine.writeCompleted(to: side, bytes: bytes, success: false, now: eventLoop.now))
            return
        }
        let promise = eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(last), promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { result in
            let success: Bool
            switch result {
            case .success:
                success = true
                // SPEC: bytes count as forwarded when their write completed.
                switch side {
                case .backend: self.runtime.metrics.bytesForwarded(in: bytes)
                case .client: self.runtime.metrics.bytesForwarded(out: bytes)
                }
            case .failure:
                success = false
            }
            self.perform(self.machine.writeCompleted(to: side, bytes: bytes, success: success, now: self.eventLoop.now))
        }
    }

    /// Passes a FIN on to `side`: everything before it was written (the state machine waits for that, as
    /// NIO turns an output close on a channel whose input ended into a full close that drops queued writes).
    func closeOutput(_ side: ConnectionSide) {
        guard let context = context(for: side) else {
            perform(machine.outputClosed(side, success: false))
            return
        }
        let promise = eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { result in
            let success: Bool
            switch result {
            case .success: success = true
            case .failure: success = false
            }
            self.perform(self.machine.outputClosed(side, success: success))
            self.syncTimer()
        }
    }

    func closeChannels(_ close: ConnectionStateMachine.Close) {
        if close.cancelConnect { connector.cancel() }
        if let mode = close.client { closeChannel(.client, mode: mode) }
        if let mode = close.backend { closeChannel(.backend, mode: mode) }
    }

    func closeChannel(_ side: ConnectionSide, mode: ConnectionStateMachine.CloseMode) {
        guard let context = context(for: side) else { return }
        _ = takeHeld(side)
        if mode == .abort {
            // The TLS handler closes at once instead of waiting for close_notify to be written.
            context.triggerUserOutboundEvent(TLSOutboundEvent.abort, promise: nil)
        }
        context.close(mode: .all, promise: nil)
    }

}
