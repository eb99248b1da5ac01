import NIOCore

/// Bytes, backpressure and half-close: the events of a connection that carries data.
extension ConnectionStateMachine {
    /// Bytes read from `side`.
    mutating func read(_ buffer: ByteBuffer, from side: ConnectionSide, now: NIODeadline) -> Action {
        switch state {
        case .forwarding(var forwarding):
            guard forwarding[from: side].phase == .open else {
                // The sink is gone (or the input already ended): nobody can take these bytes.
                return .none
            }
            forwarding[from: side].received(buffer.readableBytes, now: now)
            state = .forwarding(forwarding)
            return .write(buffer, to: side.other)
        case .connecting(var connecting):
            guard side == .client, !connecting.clientInputClosed else { return .none }
            state = .modifying
            connecting.heldBytes += buffer.readableBytes
            connecting.held.append(buffer)
            state = .connecting(connecting)
            return .none
        case .idle, .awaitingProxyHeader, .handshaking, .closing, .closed, .modifying:
            // Before the handshake only the handlers below read; after the close nothing is wanted.
            return .none
        }
    }

    /// A read burst from `side` ended: flush what it handed to the other side.
    mutating func readComplete(from side: ConnectionSide) -> Action {
        guard case .forwarding(var forwarding) = state, let batch = forwarding[from: side].flush() else {
            return .none
        }
        state = .forwarding(forwarding)
        return .flush(side.other, bytes: batch)
    }

    /// `side`'s pipeline asks for a read: whether it may go now. When not, it is remembered and
    /// issued (`Action.read`) once the other side took enough.
    mutating func shouldRead(_ side: ConnectionSide) -> Bool {
        switch state {
        case .idle, .awaitingProxyHeader, .handshaking:
            // The PROXY decoder and the TLS handshake need the bytes.
            return true
        case .connecting(var connecting):
            guard side == .client else { return true }
            if !connecting.clientInputClosed && connecting.heldBytes < configuration.bufferLimit { return true }
            guard !connecting.clientReadPending else { return false }
            state = .modifying
            connecting.clientReadPending = true
            state = .connecting(connecting)
            return false
        case .forwarding(var forwarding):
            if forwarding[from: side].canRead { return true }
            if forwarding[from: side].phase == .open, !forwarding[from: side].readPending {
                forwarding[from: side].readPending = true
                state = .forwarding(forwarding)
            }
            return false
        case .closing, .closed, .modifying:
            return false
        }
    }

    /// A flushed batch of `bytes` to `side` was written (`success`) or failed.
    mutating func writeCompleted(to side: ConnectionSide, bytes: Int, success: Bool, now: NIODeadline) -> Action {
        if success {
            if side == .backend { bytesIn += bytes } else { bytesOut += bytes }
        }
        guard case .forwarding(var forwarding) = state else { return .none }
        let source = side.other
        forwarding[from: source].completed(bytes, success: success, now: now)
        var action = Action.none
        if forwarding[from: source].readyToCloseOutput {
            forwarding[from: source].closingOutput()
            action = .closeOutput(side)
        } else if forwarding[from: source].readPending, forwarding[from: source].canRead {
            forwarding[from: source].readPending = false
            action = .read(source)
        }
        state = .forwarding(forwarding)
        return action
    }

    /// `side`'s input ended: its FIN, or TLS close_notify.
    mutating func inputClosed(_ side: ConnectionSide, now: NIODeadline) -> Action {
        switch state {
        case .forwarding(var forwarding):
            if firstCloser == nil { firstCloser = side }
            let action = endInput(from: side, in: &forwarding, now: now)
            state = .forwarding(forwarding)
            return action
        case .connecting(var connecting):
            guard side == .client, !connecting.clientInputClosed else { return .none }
            if firstCloser == nil { firstCloser = .client }
            state = .modifying
            connecting.clientInputClosed = true
            state = .connecting(connecting)
            return .none
        case .idle, .awaitingProxyHeader, .handshaking:
            // The PROXY decoder and the TLS handler report an early end as an error; should one get here,
            // nothing can follow.
            if firstCloser == nil { firstCloser = side }
            return close(side.closeReason, detail: nil, mode: .graceful)
        case .closing, .closed, .modifying:
            return .none
        }
    }

    /// The FIN passed on to `side` was delivered (`success`), or failed.
    mutating func outputClosed(_ side: ConnectionSide, success: Bool) -> Action {
        guard case .forwarding(var forwarding) = state else { return .none }
        forwarding[from: side.other].outputClosed(success: success)
        if forwarding.bothFinished {
            state = .forwarding(forwarding)
            return complete()
        }
        state = .forwarding(forwarding)
        return .none
    }

    /// `side`'s channel closed: a reset, an error, or the end of a channel whose both halves were closed.
    mutating func channelInactive(_ side: ConnectionSide, now: NIODeadline) -> Action {
        switch side {
        case .client:
            guard clientOpen else { return .none }
            clientOpen = false
        case .backend:
            guard backendOpen else { return .none }
            backendOpen = false
        }
        switch state {
        case .forwarding(var forwarding):
            if firstCloser == nil { firstCloser = side }
            // What was queued for it is lost, unless its FIN was already on the way.
            forwarding[from: side.other].sinkClosed()
            // What it sent before going away is still delivered, then its FIN.
            let action = endInput(from: side, in: &forwarding, now: now)
            state = .forwarding(forwarding)
            return forwarding.bothFinished ? complete() : action
        case .idle, .awaitingProxyHeader, .handshaking, .connecting:
            if firstCloser == nil { firstCloser = side }
            return close(side.closeReason, detail: nil, mode: .graceful)
        case .closing:
            return finishIfClosed()
        case .closed, .modifying:
            return .none
        }
    }

    /// The input of `side` ended: flush what it sent, or pass its FIN on when nothing is left to write.
    private mutating func endInput(from side: ConnectionSide, in forwarding: inout Forwarding, now: NIODeadline)
        -> Action
    {
        guard forwarding[from: side].phase == .open else { return .none }
        if forwarding.halfClosedAt == nil { forwarding.halfClosedAt = now }
        if let batch = forwarding[from: side].endInput() {
            return .flush(side.other, bytes: batch)
        }
        if forwarding[from: side].readyToCloseOutput {
            forwarding[from: side].closingOutput()
            return .closeOutput(side.other)
        }
        return .none
    }

    /// Both directions are finished: close what is still open; the reason is the first closer's.
    private mutating func complete() -> Action {
        close(firstCloser?.closeReason ?? .clientClosed, detail: nil, mode: .graceful)
    }
}
