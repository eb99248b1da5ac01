import NIOCore

/// One of a connection's two channels.
enum ConnectionSide: Sendable, Hashable, CustomStringConvertible {
    case client
    case backend

    var other: ConnectionSide {
        switch self {
        case .client: return .backend
        case .backend: return .client
        }
    }

    /// The close reason when this side's FIN or RST reached secproxy first.
    var closeReason: CloseReason {
        switch self {
        case .client: return .clientClosed
        case .backend: return .backendClosed
        }
    }

    var description: String {
        switch self {
        case .client: return "client"
        case .backend: return "backend"
        }
    }
}

/// The bytes flowing one way through a forwarding connection: read from one side (the source) and
/// written to the other (the sink). A connection has two: client→backend and backend→client.
///
/// It decides backpressure (the source is read only while fewer than `limit` bytes are held for the
/// sink) and when the source's FIN may be passed on: only once every byte read was written.
struct Direction: Sendable {
    enum Phase: Sendable, Equatable {
        /// The source is read; what it sends is written to the sink.
        case open
        /// The source's input ended (FIN, close_notify or its channel went away); what was read is
        /// still being written to the sink, and the FIN follows once it is.
        case draining
        /// Everything read was written; the FIN (`close(mode: .output)`) to the sink is under way.
        case closingOutput
        /// The FIN reached the sink: nothing more flows this way.
        case done
        /// The sink went away (reset, error) or the connection was aborted: what was queued is lost.
        case aborted
    }

    private(set) var phase: Phase = .open
    /// The source's pipeline asked for a read that backpressure held back.
    var readPending = false
    /// Bytes handed to the sink since its last flush.
    private(set) var unflushedBytes = 0
    /// Bytes flushed to the sink whose write has not completed yet.
    private(set) var queuedBytes = 0
    /// The last byte read from the source or written to the sink.
    private(set) var lastActivity: NIODeadline
    /// The source is not read while this many bytes or more are held for the sink.
    let limit: Int

    init(limit: Int, now: NIODeadline) {
        self.limit = limit
        self.lastActivity = now
    }

    /// Whether the source may be read now.
    var canRead: Bool {
        phase == .open && unflushedBytes + queuedBytes < limit
    }

    /// Nothing more will be written to the sink: its FIN was delivered, or the sink is gone.
    var isFinished: Bool {
        switch phase {
        case .done, .aborted: return true
        case .open, .draining, .closingOutput: return false
        }
    }

    /// The source's input ended (or the direction is finished).
    var inputEnded: Bool { phase != .open }

    /// `count` bytes were read from the source and handed to the sink (unflushed).
    mutating func received(_ count: Int, now: NIODeadline) {
        unflushedBytes += count
        lastActivity = now
    }

    /// Turns the unflushed bytes into one flushed batch; nil when there are none.
    mutating func flush() -> Int? {
        guard unflushedBytes > 0 else { return nil }
        let batch = unflushedBytes
        unflushedBytes = 0
        queuedBytes += batch
        return batch
    }

    /// A flushed batch of `count` bytes was written (`success`) or failed.
    mutating func completed(_ count: Int, success: Bool, now: NIODeadline) {
        queuedBytes -= count
        if success { lastActivity = now }
    }

    /// Whether the FIN may be passed on now: the input ended and every byte was written.
    var readyToCloseOutput: Bool {
        phase == .draining && unflushedBytes == 0 && queuedBytes == 0
    }

    /// The source's input ended. Returns the batch to flush first, if any.
    mutating func endInput() -> Int? {
        guard phase == .open else { return nil }
        phase = .draining
        readPending = false
        return flush()
    }

    /// The FIN to the sink was asked for.
    mutating func closingOutput() {
        precondition(readyToCloseOutput, "FIN passed on with bytes still queued")
        phase = .closingOutput
    }

    /// The FIN to the sink was delivered (`success`) or failed.
    mutating func outputClosed(success: Bool) {
        phase = success ? .done : .aborted
    }

    /// The sink's channel went away. Bytes queued for it are lost unless its FIN was already on its way
    /// (then everything before it had been written).
    mutating func sinkClosed() {
        switch phase {
        case .closingOutput, .done:
            phase = .done
        case .open, .draining, .aborted:
            phase = .aborted
            readPending = false
        }
    }

    /// The connection is aborted: nothing more flows.
    mutating func abort() {
        if phase != .done { phase = .aborted }
        readPending = false
    }
}
