import NIOCore

/// The life of one client connection and the backend connection made for it, as a value: events in,
/// `Action`s out. No channels, no clock: `Connection` feeds it what happened and performs what it
/// returns, so every ordering of events can be tested on its own.
///
/// Phases: `.awaitingProxyHeader` (accept_proxy_protocol) → `.handshaking` (tls) → `.connecting` →
/// `.forwarding` → `.closing` → `.closed`. While forwarding, each way has a `Direction`; the FIN of
/// one side is passed on only once everything read from it was written, and the channels are closed
/// only once both directions are finished — or at once on an abort (timeout, shutdown, error).
struct ConnectionStateMachine {
    struct Configuration: Sendable {
        /// A TLS handshake follows the accept (and the PROXY header, if any).
        var isTLS: Bool
        /// A PROXY header is expected first.
        var expectsProxyHeader: Bool
        var idleTimeout: TimeAmount
        var halfCloseTimeout: TimeAmount
        /// Most bytes held per direction; the source is not read while this many are held.
        var bufferLimit: Int
    }

    enum State {
        /// Created; the client channel is not active yet.
        case idle
        case awaitingProxyHeader(deadline: NIODeadline)
        case handshaking(deadline: NIODeadline)
        /// Dialling backends; client bytes that arrive meanwhile are held (at most `bufferLimit`).
        case connecting(Connecting)
        case forwarding(Forwarding)
        /// The channels are being closed; waiting for them (and a connect attempt) to end.
        case closing
        case closed
        /// Transient, while a payload is mutated in place.
        case modifying
    }

    struct Connecting {
        var held = CircularBuffer<ByteBuffer>(initialCapacity: 2)
        var heldBytes = 0
        var clientInputClosed = false
        var clientReadPending = false
    }

    struct Forwarding {
        var fromClient: Direction
        var fromBackend: Direction
        /// When the first side's input ended.
        var halfClosedAt: NIODeadline?

        subscript(from side: ConnectionSide) -> Direction {
            get { side == .client ? fromClient : fromBackend }
            set {
                if side == .client { fromClient = newValue } else { fromBackend = newValue }
            }
        }

        var bothFinished: Bool { fromClient.isFinished && fromBackend.isFinished }
    }

    /// How a channel is closed.
    enum CloseMode: Equatable {
        /// After what was written (TLS: with close_notify).
        case graceful
        /// At once: queued bytes are dropped, no close_notify.
        case abort
    }

    struct Close: Equatable {
        var client: CloseMode?
        var backend: CloseMode?
        /// Stop the connect attempt in flight.
        var cancelConnect = false
    }

    struct WireBackend: Equatable {
        /// Client bytes that arrived while connecting, to write first.
        var held: CircularBuffer<ByteBuffer>
        var heldBytes: Int
        /// The client's FIN arrived while connecting and nothing is held: pass it on at once.
        var closeOutput: Bool
        /// A client read was held back while connecting and may go now.
        var readClient: Bool
    }

    enum Action: Equatable {
        case none
        /// Hand `buffer` to the side's channel (written at the next flush).
        case write(ByteBuffer, to: ConnectionSide)
        /// Flush the side's channel; report the completion of these `bytes` with `writeCompleted`.
        case flush(ConnectionSide, bytes: Int)
        /// Ask the side's channel for a read.
        case read(ConnectionSide)
        /// Pass a FIN on to the side (close its output); report the result with `outputClosed`.
        case closeOutput(ConnectionSide)
        /// Start dialling the backends.
        case connectBackend
        /// The backend is connected: write what was held, then what `WireBackend` says.
        case wireBackend(WireBackend)
        case close(Close)
        /// Everything is closed: log the connection and release what it held.
        case finish
    }

    /// How an error seen on a channel is handled.
    enum ErrorKind: Equatable {
        /// ECONNRESET/EPIPE: the side reset; its channel closes by itself.
        case reset
        /// A fatal TLS error (the TLS handler closes the channel itself).
        case tls(String)
        /// A malformed or missing PROXY header.
        case proxyProtocol(String)
        case other(String)
    }

    let configuration: Configuration
    var state: State = .idle
    /// The client channel is open (it is from the start).
    var clientOpen = true
    /// A backend channel is wired and open.
    var backendOpen = false
    /// A connect attempt is in flight (it reports `backendConnected` or `backendFailed`).
    var connectInFlight = false
    /// Why the connection ends; the first reason decided wins.
    var reason: CloseReason?
    /// A short technical detail for `reason`.
    var detail: String?
    /// The side whose FIN or RST reached secproxy first.
    var firstCloser: ConnectionSide?
    /// Application bytes whose write to the backend completed.
    var bytesIn = 0
    /// Application bytes whose write to the client completed.
    var bytesOut = 0

    init(configuration: Configuration) {
        self.configuration = configuration
    }

    // MARK: - Before forwarding

    /// The client channel became active (after admission).
    /// - Parameter handshakeDeadline: the absolute deadline for the PROXY header and the TLS handshake.
    mutating func clientActive(handshakeDeadline: NIODeadline) -> Action {
        guard case .idle = state else { return .none }
        if configuration.expectsProxyHeader {
            state = .awaitingProxyHeader(deadline: handshakeDeadline)
            return .none
        }
        if configuration.isTLS {
            state = .handshaking(deadline: handshakeDeadline)
            return .none
        }
        return startConnecting()
    }

    /// A valid PROXY header arrived (and its client was admitted).
    mutating func proxyHeaderReceived() -> Action {
        guard case .awaitingProxyHeader(let deadline) = state else { return .none }
        if configuration.isTLS {
            state = .handshaking(deadline: deadline)
            return .none
        }
        return startConnecting()
    }

    /// The client's TLS handshake finished; `allowed`: the client passed `allowed_clients`.
    mutating func handshakeCompleted(allowed: Bool) -> Action {
        guard case .handshaking = state else { return .none }
        guard allowed else {
            return close(.handshakeFailed, detail: "client certificate not allowed", mode: .graceful)
        }
        return startConnecting()
    }

    private mutating func startConnecting() -> Action {
        state = .connecting(Connecting())
        connectInFlight = true
        return .connectBackend
    }

    /// The connect attempt produced a ready backend channel.
    mutating func backendConnected(now: NIODeadline) -> Action {
        connectInFlight = false
        backendOpen = true
        guard case .connecting(let connecting) = state else {
            // Not wanted any more (the connector normally cancels instead of reporting this).
            return closeOpenChannels(mode: .abort)
        }
        var fromClient = Direction(limit: configuration.bufferLimit, now: now)
        fromClient.received(connecting.heldBytes, now: now)
        _ = fromClient.flush()
        var closeOutput = false
        var halfClosedAt: NIODeadline?
        if connecting.clientInputClosed {
            _ = fromClient.endInput()
            halfClosedAt = now
            if fromClient.readyToCloseOutput {
                fromClient.closingOutput()
                closeOutput = true
            }
        }
        // A client read held back while connecting goes now, or once the held bytes are written.
        let readClient = connecting.clientReadPending && fromClient.canRead
        fromClient.readPending = connecting.clientReadPending && !readClient && fromClient.phase == .open
        state = .forwarding(
            Forwarding(
                fromClient: fromClient,
                fromBackend: Direction(limit: configuration.bufferLimit, now: now),
                halfClosedAt: halfClosedAt
            )
        )
        return .wireBackend(
            WireBackend(
                held: connecting.held, heldBytes: connecting.heldBytes, closeOutput: closeOutput,
                readClient: readClient
            )
        )
    }

    /// Every backend failed, or the attempt was cancelled (then `reason` is ignored).
    mutating func backendFailed(_ reason: CloseReason, detail: String?) -> Action {
        connectInFlight = false
        switch state {
        case .connecting:
            return close(reason, detail: detail, mode: .graceful)
        case .closing:
            return finishIfClosed()
        case .idle, .awaitingProxyHeader, .handshaking, .forwarding, .closed, .modifying:
            return .none
        }
    }
}
