#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import SecProxyTLS

/// One client connection and the backend connection made for it: performs what its
/// `ConnectionStateMachine` decides.
///
/// Confined to the client channel's event loop; the backend is dialled on the same loop, so the pair
/// needs no lock. The two `GlueHandler`s hand their channel's events here; the connection turns them
/// into state machine events and the returned actions into channel operations.
final class Connection {
    var machine: ConnectionStateMachine
    let runtime: ListenerRuntime
    let tracker: ConnectionTracker
    let observer: any ConnectionObserver
    let eventLoop: EventLoop
    let acceptedAt: NIODeadline
    let connector: any BackendConnecting
    /// The limits this connection counts against; given back when it finishes.
    var ticket: AdmissionTicket?

    var client: ChannelHandlerContext?
    var backend: ChannelHandlerContext?
    /// The last buffer handed to each side: written by the flush whose promise completes its batch.
    var heldForClient: ByteBuffer?
    var heldForBackend: ByteBuffer?

    var timer: Scheduled<Void>?
    var timerDeadline: NIODeadline?
    /// Counted in the tracker's handshakes in progress (adaptive handshake deadline).
    var inHandshake = false

    /// The client: the socket's peer, or the address a PROXY header named.
    var clientAddress: SocketAddress?
    /// The address the client connected to (for the PROXY header sent to the backend).
    var localAddress: SocketAddress?
    var tlsInfo: TLSSessionInfo?
    var pool: BackendPool?
    /// The backend wired to this connection, counted open in its balancer until the connection ends.
    var wired: (target: BackendTarget, index: Int)?

    /// - Parameters:
    ///   - connector: dials the backends; nil = real sockets on the channel's event loop.
    init(
        runtime: ListenerRuntime, tracker: ConnectionTracker, observer: any ConnectionObserver, channel: Channel,
        ticket: AdmissionTicket?, connector: (any BackendConnecting)? = nil
    ) {
        self.runtime = runtime
        self.tracker = tracker
        self.observer = observer
        self.eventLoop = channel.eventLoop
        self.acceptedAt = channel.eventLoop.now
        self.ticket = ticket
        self.clientAddress = channel.remoteAddress
        self.localAddress = channel.localAddress
        self.connector =
            connector ?? BackendConnector(runtime: runtime, eventLoop: channel.eventLoop, observer: observer)
        self.machine = ConnectionStateMachine(
            configuration: .init(
                isTLS: runtime.mode == .tls,
                expectsProxyHeader: runtime.acceptProxyProtocol,
                idleTimeout: runtime.idleTimeout,
                halfCloseTimeout: runtime.halfCloseTimeout,
                bufferLimit: runtime.directionLimit
            )
        )
    }

    // MARK: - Events from the glue and the pipeline

    func glueAdded(_ context: ChannelHandlerContext, side: ConnectionSide) {
        switch side {
        case .client: client = context
        case .backend: backend = context
        }
    }

    func clientActive() {
        var deadline = acceptedAt + runtime.handshakeTimeout
        if runtime.mode == .tls {
            // Shorter when many handshakes are in progress (ConnectionTracker.handshakeStarted).
            inHandshake = true
            deadline = acceptedAt + tracker.handshakeStarted(timeout: runtime.handshakeTimeout)
        }
        perform(machine.clientActive(handshakeDeadline: deadline))
        syncTimer()
    }

    func proxyHeaderReceived(_ header: ProxyProtocolHeader) {
        takeAddresses(from: header)
        perform(machine.proxyHeaderReceived())
        syncTimer()
    }

    /// The real client is the one a PROXY header names (`UNKNOWN`/`LOCAL`: the socket's peer stays).
    func takeAddresses(from header: ProxyProtocolHeader) {
        if case .inet(let source, let destination) = header.addresses {
            clientAddress = source
            localAddress = destination
        }
    }

    func handshakeCompleted(_ info: TLSSessionInfo) {
        guard machine.isBeforeHandshakeEnd else { return }
        endHandshake()
        tlsInfo = info
        // allowed_clients: refused before any backend is contacted (and counted as a failed handshake).
        let allowed = runtime.allows(info.peerCertificate)
        if allowed {
            let elapsed = eventLoop.now - acceptedAt
            observer.handshakeCompleted(
                listener: runtime.name, tlsVersion: info.version, resumed: info.resumed,
                seconds: Double(elapsed.nanoseconds) / 1e9
            )
        }
        perform(machine.handshakeCompleted(allowed: allowed))
        syncTimer()
    }

    func read(_ buffer: ByteBuffer, from side: ConnectionSide) {
        perform(machine.read(buffer, from: side, now: eventLoop.now))
    }

    func readComplete(from side: ConnectionSide) {
        perform(machine.readComplete(from: side))
    }

    func shouldRead(_ side: ConnectionSide) -> Bool {
        machine.shouldRead(side)
    }

    func inputClosed(_ side: ConnectionSide) {
        perform(machine.inputClosed(side, now: eventLoop.now))
        syncTimer()
    }

    func channelInactive(_ side: ConnectionSide) {
        switch side {
        case .client: heldForClient = nil
        case .backend: heldForBackend = nil
        }
        perform(machine.channelInactive(side, now: eventLoop.now))
        syncTimer()
    }

    func errorCaught(_ error: any Error, on side: ConnectionSide) {
        perform(machine.errorCaught(on: side, Self.classify(error)))
        syncTimer()
    }

    /// Ends the connection at once (the drain ran out, or a limit refused the client a PROXY header named).
    func abort(_ reason: CloseReason, detail: String? = nil) {
        perform(machine.abort(reason, detail: detail))
        syncTimer()
    }

    func shutdown() {
        abort(.shutdown)
    }

    /// The per-client count taken for the client a PROXY header named; given back at the end.
    func holdPerClient(limiter: PerIPLimiter, key: PerIPLimiter.Key) {
        ticket?.perClient = (limiter, key)
    }

    static func classify(_ error: any Error) -> ConnectionStateMachine.ErrorKind {
        if let proxyError = error as? ProxyProtocolError { return .proxyProtocol(proxyError.reason) }
        if let tlsError = error as? TLSError { return .tls(tlsError.reason) }
        if let ioError = error as? IOError, ioError.errnoCode == ECONNRESET || ioError.errnoCode == EPIPE {
            return .reset
        }
        return .other(ErrorText.of(error))
    }
}

@available(*, unavailable)
extension Connection: Sendable {}

