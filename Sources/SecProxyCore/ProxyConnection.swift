import NIOCore
import NIOPosix
import SecProxyTLS

/// One client connection and the backend connection made for it: the state of the pair and the
/// glue that moves bytes between them.
///
/// Confined to the client channel's event loop; the backend is dialled on the same loop, so the
/// pair needs no lock. The two channel handlers (`ClientSideHandler`, `BackendSideHandler`) only
/// forward their events here.
final class ProxyConnection {
    enum Phase {
        /// TLS listener: waiting for the handshake (under the absolute handshake deadline).
        case handshaking
        /// Dialling backends; client bytes that already arrived wait in `pendingToBackend`.
        case connecting
        /// Both channels wired; bytes flow.
        case forwarding
        /// Closing or closed; waiting for both channels to go inactive.
        case closed
    }

    enum Side {
        case client
        case backend

        var closeReason: CloseReason { self == .client ? .clientClosed : .backendClosed }
    }

    private let listener: ListenerRuntime
    private let tracker: ConnectionTracker
    private let observer: any ConnectionObserver
    private let eventLoop: EventLoop
    private let acceptedAt: NIODeadline
    /// `IP:PORT` of the client: the socket's peer, or the address a PROXY header carried.
    private var clientAddress: String
    /// The client and the address it connected to, for the PROXY header sent to the backend.
    private var clientSocketAddress: SocketAddress?
    private var localSocketAddress: SocketAddress?
    /// With `accept_proxy_protocol`: applies the per-client limits to the real client address once
    /// the header names it; returns the reason to refuse, if any.
    var admitClient: ((SocketAddress) -> CloseReason?)?
    let handle: ProxyConnectionHandle

    private var phase: Phase = .handshaking
    private var client: ChannelHandlerContext?
    private var backend: ChannelHandlerContext?
    private weak var backendHandler: BackendSideHandler?
    private var backendText = ""

    private var clientInactive = false
    /// A backend channel exists (connecting or connected) and has not gone inactive yet.
    private var backendInFlight = false
    private var finished = false

    private var reason: CloseReason?
    private var detail: String?
    /// The side whose FIN or RST reached us first.
    private var firstCloser: Side?

    private var tlsInfo: TLSSessionInfo?
    private var bytesIn = 0
    private var bytesOut = 0

    private var lastClientActivity: NIODeadline
    private var lastBackendActivity: NIODeadline
    private var clientInputClosed = false
    private var backendInputClosed = false
    private var halfClosedAt: NIODeadline?

    private var pendingToBackend: [ByteBuffer] = []
    /// Completed once the FIN passed on to that side was preceded by every queued byte.
    private var clientOutputDone: EventLoopFuture<Void>?
    private var backendOutputDone: EventLoopFuture<Void>?
    private var clientReadPending = false
    private var backendReadPending = false
    private var backendNeedsFlush = false
    private var clientNeedsFlush = false
    private var timer: Scheduled<Void>?
    /// Makes a graceful close abrupt after `closeGrace`.
    private var graceTimer: Scheduled<Void>?

    /// Set while this connection counts as "in handshake" for the tracker's adaptive deadline.
    private var inHandshake = false
    private var handshakeDeadline: NIODeadline
    /// Run once when the connection is finished (releases per-client limits).
    var onFinish: (() -> Void)?

    /// The backends this connection dials: the listener's, or a route's chosen by SNI.
    private var targets: [BackendTarget] = []
    private var pool: BackendPool?
    /// The pool index of the wired backend, counted open in its balancer until the connection ends.
    private var openedBackendIndex: Int?
    /// Pool indices in the order this connection tries them.
    private var attemptOrder: [Int] = []
    /// A backend connected over TCP whose TLS handshake (`[listener.backend_tls]`) is under way.
    private var handshakingBackend: (handler: BackendSideHandler, target: BackendTarget, attempt: Int)?
    private var backendHandshakeTimer: Scheduled<Void>?
    private var lastConnectError: (any Error)?

    init(
        listener: ListenerRuntime, tracker: ConnectionTracker, observer: any ConnectionObserver, channel: Channel
    ) {
        self.listener = listener
        self.tracker = tracker
        self.observer = observer
        self.eventLoop = channel.eventLoop
        self.acceptedAt = .now()
        self.lastClientActivity = acceptedAt
        self.lastBackendActivity = acceptedAt
        self.handshakeDeadline = acceptedAt + listener.handshakeTimeout
        self.clientSocketAddress = channel.remoteAddress
        self.localSocketAddress = channel.localAddress
        self.clientAddress = channel.remoteAddress?.logDescription ?? ""
        let eventLoop = channel.eventLoop
        // The tracker calls back on `eventLoop`; the connection outlives it until `finish()`.
        var shutdown: () -> Void = {}
        self.handle = ProxyConnectionHandle(eventLoop: eventLoop, onShutdown: { shutdown() })
        shutdown = { [weak self] in self?.close(.shutdown) }
    }

    /// A connection refused before any work (over a limit): only its summary.
    static func rejectedSummary(listener: String, channel: Channel, reason: CloseReason) -> ConnectionSummary {
        ConnectionSummary(
            listener: listener, client: channel.remoteAddress?.logDescription ?? "", reason: reason
        )
    }

    // MARK: - Client side

    /// The client handler joined the pipeline (before the channel is active).
    func clientAttached(_ context: ChannelHandlerContext) {
        client = context
    }

    func clientActive(_ context: ChannelHandlerContext) {
        client = context
        switch listener.mode {
        case .tls:
            phase = .handshaking
            // An absolute deadline from accept: bytes trickling in do not move it. Shorter when many
            // handshakes are in progress (see ConnectionTracker.handshakeStarted).
            inHandshake = true
            handshakeDeadline = acceptedAt + tracker.handshakeStarted(timeout: listener.handshakeTimeout)
            schedule(at: handshakeDeadline)
        case .plain:
            if listener.acceptProxyProtocol {
                // handshake_timeout bounds the wait for the PROXY header.
                phase = .handshaking
                schedule(at: handshakeDeadline)
            } else {
                startConnecting()
            }
        }
    }

    /// A valid PROXY header arrived (`accept_proxy_protocol`): the real client is the one it names.
    func proxyHeaderReceived(_ header: ProxyProtocolHeader) {
        guard case .handshaking = phase else { return }
        if case .inet(let source, let destination) = header.addresses {
            clientSocketAddress = source
            localSocketAddress = destination
            clientAddress = source.logDescription
            if let refusal = admitClient?(source) {
                close(refusal)
                return
            }
        }
        if listener.mode == .plain {
            startConnecting()
        }
    }

    func handshakeCompleted(_ info: TLSSessionInfo) {
        guard case .handshaking = phase else { return }
        endHandshake()
        tlsInfo = info
        guard listener.allows(info.peerCertificate) else {
            // allowed_clients: refused before any backend is contacted.
            close(.handshakeFailed, detail: "client certificate not allowed")
            return
        }
        let elapsed = NIODeadline.now() - acceptedAt
        observer.handshakeCompleted(
            listener: listener.name, tlsVersion: info.version, resumed: info.resumed,
            seconds: Double(elapsed.nanoseconds) / 1e9
        )
        startConnecting()
    }

    /// Whether the client may be read now; remembers the wish when not.
    func shouldReadClient() -> Bool {
        switch phase {
        case .handshaking:
            return true
        case .connecting:
            clientReadPending = true
            return false
        case .forwarding:
            if backend?.channel.isWritable ?? false { return true }
            clientReadPending = true
            return false
        case .closed:
            return false
        }
    }

    func clientRead(_ buffer: ByteBuffer) {
        switch phase {
        case .handshaking, .closed:
            return
        case .connecting:
            bytesIn += buffer.readableBytes
            pendingToBackend.append(buffer)
        case .forwarding:
            bytesIn += buffer.readableBytes
            lastClientActivity = .now()
            backend?.write(NIOAny(buffer), promise: nil)
            backendNeedsFlush = true
        }
    }

    func clientReadComplete() {
        if backendNeedsFlush {
            backendNeedsFlush = false
            backend?.flush()
        }
    }

    func clientWritabilityChanged() {
        guard case .forwarding = phase, let client, client.channel.isWritable else { return }
        // The client took data: the backend-to-client direction is moving even while its reads wait.
        lastBackendActivity = .now()
        guard backendReadPending else { return }
        backendReadPending = false
        backend?.read()
    }

    /// The client's FIN (or TLS close_notify).
    func clientInputClosed(_ context: ChannelHandlerContext) {
        guard !clientInputClosed else { return }
        clientInputClosed = true
        if firstCloser == nil { firstCloser = .client }
        switch phase {
        case .handshaking, .closed:
            close(.clientClosed)
        case .connecting:
            // Replayed once the backend is wired.
            break
        case .forwarding:
            forwardClientFIN()
        }
    }

    func clientError(_ error: any Error) {
        if let proxyError = error as? ProxyProtocolError {
            close(.proxyProtocolInvalid, detail: proxyError.reason)
        } else if let tlsError = error as? TLSError {
            if tlsInfo == nil {
                close(.handshakeFailed, detail: tlsError.reason)
            } else {
                close(.error, detail: tlsError.reason)
            }
        } else if Self.isReset(error) {
            if firstCloser == nil { firstCloser = .client }
            close(.clientClosed)
        } else {
            close(.error, detail: "\(error)")
        }
    }

    /// The client channel closed, or its pipeline was torn down without it ever becoming active
    /// (a socket reset right after accept fails registration): either way the connection ends here.
    func clientBecameInactive() {
        guard !clientInactive else { return }
        clientInactive = true
        if firstCloser == nil { firstCloser = .client }
        close(firstCloser?.closeReason ?? .clientClosed)
        finishIfDone()
    }

    // MARK: - Backend side

    private func startConnecting() {
        phase = .connecting
        cancelTimer()
        let pool = listener.pool(forServerName: tlsInfo?.serverName)
        self.pool = pool
        targets = pool.backends
        attemptOrder = pool.attemptOrder()
        connect(attempt: 0)
    }

    private func connect(attempt: Int) {
        guard attempt < targets.count else {
            if case .connectTimeout = lastConnectError as? ChannelError {
                close(.connectTimeout)
            } else {
                close(.backendUnavailable)
            }
            return
        }
        let index = attemptOrder[attempt]
        let target = targets[index]
        let handler = BackendSideHandler(connection: self)
        // The initializer runs on this same event loop.
        let boundHandler = NIOLoopBound(handler, eventLoop: eventLoop)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(listener.connectTimeout)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.writeBufferWaterMark, value: listener.writeBufferWaterMark)
            .channelOption(.maxMessagesPerRead, value: 1)
            .channelOption(.recvAllocator, value: listener.receiveAllocator)
            .channelInitializer { [backendTLS = listener.backendTLS] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let backendTLS {
                        try channel.pipeline.syncOperations.addHandler(
                            TLSHandler(context: backendTLS.context, serverName: backendTLS.serverName)
                        )
                    }
                    try channel.pipeline.syncOperations.addHandler(boundHandler.value)
                }
            }
        let future: EventLoopFuture<Channel>
        switch target.endpoint {
        case .address(let address):
            future = bootstrap.connect(to: address)
        case .hostPort(let host, let port):
            future = bootstrap.connect(host: host, port: port)
        case .unix(let path):
            future = bootstrap.connect(unixDomainSocketPath: path)
        }
        backendInFlight = true
        future.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                self.backendConnected(channel, handler: handler, target: target, attempt: attempt)
            case .failure(let error):
                self.backendInFlight = false
                self.pool?.health?.record(index: index, success: false)
                self.observer.backendConnectFailed(listener: self.listener.name, backend: target.text, error: error)
                self.lastConnectError = error
                if case .connecting = self.phase {
                    self.connect(attempt: attempt + 1)
                } else {
                    self.finishIfDone()
                }
            }
        }
    }

    private func backendConnected(
        _ channel: Channel, handler: BackendSideHandler, target: BackendTarget, attempt: Int
    ) {
        guard case .connecting = phase else {
            // The client went away while we were dialling: this backend is not wanted. Its events are
            // ignored (it is not the current backend), so account for it here.
            channel.close(promise: nil)
            backendInFlight = false
            finishIfDone()
            return
        }
        guard let context = handler.context else {
            // Closed between connect and now: count it as a failed attempt.
            backendInFlight = false
            connect(attempt: attempt + 1)
            return
        }
        if listener.backendTLS != nil {
            // Wired once the backend TLS handshake finished, within what is left of connect_timeout.
            handshakingBackend = (handler, target, attempt)
            backendHandshakeTimer = eventLoop.assumeIsolated().scheduleTask(in: listener.connectTimeout) {
                [weak self] in
                self?.backendHandshakeFailed(handler, error: ChannelError.connectTimeout(self?.listener.connectTimeout ?? .zero))
            }
            return
        }
        wireBackend(context, handler: handler, target: target, attempt: attempt)
    }

    /// Whether `handler` belongs to a backend whose TLS handshake is under way.
    func isHandshakingBackend(_ handler: BackendSideHandler) -> Bool {
        handshakingBackend?.handler === handler
    }

    /// The backend's TLS handshake finished: wire it.
    func backendHandshakeCompleted(_ handler: BackendSideHandler) {
        guard let pending = handshakingBackend, pending.handler === handler else { return }
        handshakingBackend = nil
        backendHandshakeTimer?.cancel()
        backendHandshakeTimer = nil
        guard case .connecting = phase, let context = handler.context else {
            handler.context?.close(promise: nil)
            backendInFlight = false
            finishIfDone()
            return
        }
        wireBackend(context, handler: handler, target: pending.target, attempt: pending.attempt)
    }

    /// The backend's TLS handshake failed, timed out or its connection closed: try the next backend.
    func backendHandshakeFailed(_ handler: BackendSideHandler, error: any Error) {
        guard let pending = handshakingBackend, pending.handler === handler else { return }
        handshakingBackend = nil
        backendHandshakeTimer?.cancel()
        backendHandshakeTimer = nil
        pool?.health?.record(index: attemptOrder[pending.attempt], success: false)
        handler.context?.close(promise: nil)
        backendInFlight = false
        observer.backendConnectFailed(listener: listener.name, backend: pending.target.text, error: error)
        lastConnectError = error
        if case .connecting = phase {
            connect(attempt: pending.attempt + 1)
        } else {
            finishIfDone()
        }
    }

    private func wireBackend(
        _ context: ChannelHandlerContext, handler: BackendSideHandler, target: BackendTarget, attempt: Int
    ) {
        let index = attemptOrder[attempt]
        pool?.balancer.opened(index)
        pool?.health?.record(index: index, success: true)
        openedBackendIndex = index
        backend = context
        backendHandler = handler
        backendText = target.text
        phase = .forwarding
        let now = NIODeadline.now()
        lastClientActivity = now
        lastBackendActivity = now

        if let header = proxyProtocolHeader() {
            context.write(NIOAny(header), promise: nil)
        }
        for buffer in pendingToBackend { context.write(NIOAny(buffer), promise: nil) }
        pendingToBackend = []
        context.flush()
        if clientInputClosed {
            forwardClientFIN()
        } else if clientReadPending, context.channel.isWritable {
            clientReadPending = false
            client?.read()
        }
        if backendReadPending {
            backendReadPending = false
            context.read()
        }
        rearmTimer()
    }

    /// The PROXY header for the backend (`proxy_protocol`), or nil when off.
    private func proxyProtocolHeader() -> ByteBuffer? {
        let addresses: ProxyProtocolHeader.Addresses
        if let source = clientSocketAddress, let destination = localSocketAddress,
            source.ipAddress != nil, destination.ipAddress != nil
        {
            addresses = .inet(source: source, destination: destination)
        } else {
            addresses = .unknown
        }
        var header = ProxyProtocolHeader(addresses: addresses)
        switch listener.proxyProtocol {
        case .off:
            return nil
        case .v1:
            return header.encodeV1()
        case .v2:
            if let tlsInfo {
                header.alpn = tlsInfo.alpn
                header.authority = tlsInfo.serverName
                header.tls = ProxyProtocolHeader.TLS(
                    version: tlsInfo.version, cipher: tlsInfo.cipher,
                    clientCommonName: tlsInfo.peerCertificate?.commonName,
                    clientCertificateVerified: tlsInfo.peerCertificate != nil
                )
            }
            return header.encodeV2()
        }
    }

    func isCurrentBackend(_ handler: BackendSideHandler) -> Bool {
        backendHandler === handler
    }

    func shouldReadBackend() -> Bool {
        switch phase {
        case .handshaking, .connecting:
            backendReadPending = true
            return false
        case .forwarding:
            if client?.channel.isWritable ?? false { return true }
            backendReadPending = true
            return false
        case .closed:
            return false
        }
    }

    func backendRead(_ buffer: ByteBuffer) {
        guard case .forwarding = phase else { return }
        bytesOut += buffer.readableBytes
        lastBackendActivity = .now()
        client?.write(NIOAny(buffer), promise: nil)
        clientNeedsFlush = true
    }

    func backendReadComplete() {
        if clientNeedsFlush {
            clientNeedsFlush = false
            client?.flush()
        }
    }

    func backendWritabilityChanged() {
        guard case .forwarding = phase, let backend, backend.channel.isWritable else { return }
        lastClientActivity = .now()
        guard clientReadPending else { return }
        clientReadPending = false
        client?.read()
    }

    func backendInputClosedEvent() {
        guard !backendInputClosed else { return }
        backendInputClosed = true
        if firstCloser == nil { firstCloser = .backend }
        guard case .forwarding = phase else { return }
        halfClosedAt = .now()
        clientNeedsFlush = false
        if let client {
            clientOutputDone = passFIN(to: client, inputClosed: clientInputClosed, viaTLS: listener.mode == .tls)
        }
        closeIfBothDone()
    }

    func backendError(_ error: any Error) {
        if Self.isReset(error) {
            if firstCloser == nil { firstCloser = .backend }
            close(.backendClosed)
        } else {
            close(.error, detail: "\(error)")
        }
    }

    func backendBecameInactive() {
        backendInFlight = false
        if firstCloser == nil { firstCloser = .backend }
        close(firstCloser?.closeReason ?? .backendClosed)
        finishIfDone()
    }

    // MARK: - Half-close, timers, close

    private func forwardClientFIN() {
        halfClosedAt = .now()
        backendNeedsFlush = false
        if let backend {
            backendOutputDone = passFIN(
                to: backend, inputClosed: backendInputClosed, viaTLS: listener.backendTLS != nil
            )
        }
        closeIfBothDone()
    }

    /// Passes a FIN on to `context`'s channel once everything queued for it is written; completes then.
    ///
    /// NIO turns `close(mode: .output)` on a socket whose input already ended into a full close that
    /// drops queued writes, so in that case only wait for the writes (an empty write completes after
    /// every earlier one); the full close follows from `closeIfBothDone`. The TLS handler always waits
    /// for its queued data and close_notify before it passes the close down.
    private func passFIN(to context: ChannelHandlerContext, inputClosed: Bool, viaTLS: Bool) -> EventLoopFuture<Void> {
        let done = eventLoop.makePromise(of: Void.self)
        if inputClosed && !viaTLS {
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(capacity: 0)), promise: done)
        } else {
            context.flush()
            context.close(mode: .output, promise: done)
        }
        return done.futureResult
    }

    /// Once both sides sent their FIN and both FINs were passed on, closes the pair. Meanwhile the
    /// idle and half-close deadlines bound a peer that stops reading.
    private func closeIfBothDone() {
        rearmTimer()
        guard clientInputClosed, backendInputClosed, let clientOutputDone, let backendOutputDone else { return }
        let reason = firstCloser?.closeReason ?? .clientClosed
        clientOutputDone.and(backendOutputDone).assumeIsolated().whenComplete { _ in
            self.close(reason)
        }
    }

    /// Reasons after which the peers get no more bytes: close at once, without waiting for queued data.
    private static let abortReasons: Set<CloseReason> = [.idleTimeout, .handshakeTimeout, .shutdown]
    /// How long a graceful close may wait for queued bytes and close_notify before it is made abrupt.
    static let closeGrace: TimeAmount = .seconds(5)

    /// Closes both channels; the first reason given wins.
    ///
    /// The TLS handler's close waits for queued data and close_notify, which a peer that stopped reading
    /// would hold forever; a second close is immediate. So: at once for timeouts and shutdown, else
    /// after `closeGrace`.
    func close(_ reason: CloseReason, detail: String? = nil) {
        if self.reason == nil {
            self.reason = reason
            self.detail = detail
        }
        if case .closed = phase { return }
        phase = .closed
        endHandshake()
        cancelTimer()
        pendingToBackend = []
        client?.close(promise: nil)
        backend?.close(promise: nil)
        handshakingBackend?.handler.context?.close(promise: nil)
        if Self.abortReasons.contains(reason) {
            client?.close(promise: nil)
            backend?.close(promise: nil)
        } else if client != nil || backend != nil {
            graceTimer = eventLoop.assumeIsolated().scheduleTask(in: Self.closeGrace) { [weak self] in
                self?.graceTimer = nil
                self?.client?.close(promise: nil)
                self?.backend?.close(promise: nil)
            }
        }
    }

    private func finishIfDone() {
        guard !finished, clientInactive, !backendInFlight else { return }
        finished = true
        cancelTimer()
        graceTimer?.cancel()
        graceTimer = nil
        tracker.remove(handle)
        onFinish?()
        onFinish = nil
        if let openedBackendIndex {
            pool?.balancer.closed(openedBackendIndex)
        }
        admitClient = nil
        let duration = NIODeadline.now() - acceptedAt
        observer.connectionClosed(
            ConnectionSummary(
                listener: listener.name,
                client: clientAddress,
                backend: backendText,
                sni: tlsInfo?.serverName,
                alpn: tlsInfo?.alpn,
                tlsVersion: tlsInfo?.version,
                cipher: tlsInfo?.cipher,
                resumed: tlsInfo?.resumed,
                bytesIn: bytesIn,
                bytesOut: bytesOut,
                durationMilliseconds: duration.nanoseconds / 1_000_000,
                reason: reason ?? .error,
                detail: detail
            )
        )
        // Break the reference cycles through the handler contexts.
        client = nil
        backend = nil
    }

    private func endHandshake() {
        guard inHandshake else { return }
        inHandshake = false
        tracker.handshakeEnded()
    }

    private func schedule(at deadline: NIODeadline) {
        timer?.cancel()
        timer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            timer = nil
            timerFired()
        }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    /// The next moment the pair must be looked at: idle timeout, or half-close timeout once one side sent FIN.
    private func nextDeadline() -> (NIODeadline, CloseReason)? {
        switch phase {
        case .handshaking:
            return (handshakeDeadline, .handshakeTimeout)
        case .connecting, .closed:
            return nil
        case .forwarding:
            var deadline = max(lastClientActivity, lastBackendActivity) + listener.idleTimeout
            if let halfClosedAt, clientInputClosed != backendInputClosed {
                // Only the direction that is still open counts.
                let open = clientInputClosed ? lastBackendActivity : lastClientActivity
                deadline = min(deadline, max(open, halfClosedAt) + listener.halfCloseTimeout)
            }
            return (deadline, .idleTimeout)
        }
    }

    private func rearmTimer() {
        guard let (deadline, _) = nextDeadline() else { return cancelTimer() }
        schedule(at: deadline)
    }

    private func timerFired() {
        guard let (deadline, reason) = nextDeadline() else { return }
        if deadline <= .now() {
            close(reason)
        } else {
            schedule(at: deadline)
        }
    }

    private static func isReset(_ error: any Error) -> Bool {
        if let io = error as? IOError {
            return io.errnoCode == ECONNRESET || io.errnoCode == EPIPE
        }
        return false
    }
}
