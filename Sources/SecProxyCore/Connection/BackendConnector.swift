import NIOCore
import NIOPosix
import SecProxyTLS

/// How dialling the backends for one client connection ended.
enum BackendConnectOutcome {
    /// A backend is connected, and with `[listener.backend_tls]` its TLS handshake is done: the channel
    /// is ready for the glue.
    case connected(Channel, target: BackendTarget, index: Int)
    /// No backend could be reached; the reason and detail for the log line.
    case failed(CloseReason, detail: String?)
    /// `cancel()` was called; the attempt's channel is closed.
    case cancelled
}

/// What `Connection` needs from whoever dials its backend (real sockets, or a test's channels).
protocol BackendConnecting: AnyObject {
    /// Starts dialling `pool`; `onOutcome` is called exactly once, on the connection's event loop.
    func start(pool: BackendPool, onOutcome: @escaping (BackendConnectOutcome) -> Void)
    /// The client went away: stop, without counting anything against the backend.
    func cancel()
}

/// Dials a connection's backends in the pool's attempt order, each at most once: TCP (or a Unix
/// socket), then the backend TLS handshake within what is left of the attempt's `connect_timeout`.
///
/// Failures the backend caused (refused, unreachable, timed out, a failed or truncated TLS handshake)
/// count against its health and are reported to the observer; the next backend is tried. Local
/// failures (out of descriptors, buffers, memory or ports) end the dialling at once and count
/// against no backend; so does a cancel (the client left).
final class BackendConnector: BackendConnecting {
    private final class Attempt {
        let index: Int
        let target: BackendTarget
        let deadline: NIODeadline
        var channel: Channel?
        var handshakeTimer: Scheduled<Void>?
        var ended = false

        init(index: Int, target: BackendTarget, deadline: NIODeadline) {
            self.index = index
            self.target = target
            self.deadline = deadline
        }
    }

    private let runtime: ListenerRuntime
    private let eventLoop: EventLoop
    private let observer: any ConnectionObserver
    private var pool: BackendPool?
    private var order: [Int] = []
    private var nextAttempt = 0
    private var attempt: Attempt?
    private var onOutcome: ((BackendConnectOutcome) -> Void)?
    private var cancelled = false
    /// The last failure, for the final reason: `connect_timeout` when it timed out.
    private var lastFailure: (timedOut: Bool, detail: String)?

    init(runtime: ListenerRuntime, eventLoop: EventLoop, observer: any ConnectionObserver) {
        self.runtime = runtime
        self.eventLoop = eventLoop
        self.observer = observer
    }

    func start(pool: BackendPool, onOutcome: @escaping (BackendConnectOutcome) -> Void) {
        self.pool = pool
        self.order = pool.attemptOrder()
        self.onOutcome = onOutcome
        startNextAttempt()
    }

    func cancel() {
        guard !cancelled, onOutcome != nil else { return }
        cancelled = true
        if let channel = attempt?.channel {
            // Ends the attempt: its connect or handshake fails, and `attemptEnded` reports the cancel.
            channel.close(promise: nil)
        } else if attempt == nil {
            report(.cancelled)
        }
    }

    private func report(_ outcome: BackendConnectOutcome) {
        guard let onOutcome else { return }
        self.onOutcome = nil
        onOutcome(outcome)
    }

    private func startNextAttempt() {
        guard let pool, nextAttempt < order.count else {
            let reason: CloseReason = (lastFailure?.timedOut ?? false) ? .connectTimeout : .backendUnavailable
            report(.failed(reason, detail: lastFailure?.detail))
            return
        }
        let index = order[nextAttempt]
        nextAttempt += 1
        let attempt = Attempt(index: index, target: pool.backends[index], deadline: eventLoop.now + runtime.connectTimeout)
        self.attempt = attempt
        let future: EventLoopFuture<Channel>
        let bootstrap = makeBootstrap(for: attempt)
        switch attempt.target.endpoint {
        case .address(let address):
            future = bootstrap.connect(to: address)
        case .hostPort(let host, let port):
            future = bootstrap.connect(host: host, port: port)
        case .unix(let path):
            future = bootstrap.connect(unixDomainSocketPath: path)
        }
        future.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                if self.runtime.backendTLS == nil {
                    self.attemptEnded(attempt, .success(channel))
                } else {
                    // The TLS handshake must end within what is left of connect_timeout.
                    attempt.handshakeTimer = self.eventLoop.assumeIsolated().scheduleTask(deadline: attempt.deadline) {
                        self.attemptEnded(attempt, .failure(ChannelError.connectTimeout(self.runtime.connectTimeout)))
                    }
                }
            case .failure(let error):
                self.attemptEnded(attempt, .failure(error))
            }
        }
    }

    private func makeBootstrap(for attempt: Attempt) -> ClientBootstrap {
        let bound = NIOLoopBound((self, attempt), eventLoop: eventLoop)
        // The options are set in the initializer, synchronously: a bootstrap's own option list applies
        // each one through a chain of futures, which cost more than the rest of the set-up (TCP_NODELAY is
        // the bootstrap's default).
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(runtime.connectTimeout)
            .channelInitializer { [backendTLS = runtime.backendTLS, receiveAllocator = runtime.receiveAllocator] channel in
            channel.eventLoop.makeCompletedFuture {
                let (connector, attempt) = bound.value
                attempt.channel = channel
                if connector.cancelled {
                    throw ChannelError.ioOnClosedChannel
                }
                if let options = channel.syncOptions {
                    try options.setOption(.allowRemoteHalfClosure, value: true)
                    try options.setOption(.maxMessagesPerRead, value: 1)
                    try options.setOption(.recvAllocator, value: receiveAllocator)
                }
                if let backendTLS {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(
                        TLSHandler(context: backendTLS.context, serverName: backendTLS.serverName)
                    )
                    try pipeline.addHandler(
                        BackendReadinessHandler { result in
                            connector.attemptEnded(attempt, result.map { channel })
                        }
                    )
                }
            }
        }
    }

    private func attemptEnded(_ attempt: Attempt, _ result: Result<Channel, any Error>) {
        guard !attempt.ended, attempt === self.attempt else { return }
        attempt.ended = true
        attempt.handshakeTimer?.cancel()
        attempt.handshakeTimer = nil
        self.attempt = nil
        if cancelled {
            // Report once the attempt's socket is closed, so that the connection ends after it.
            guard let channel = attempt.channel else { return report(.cancelled) }
            channel.close(promise: nil)
            channel.closeFuture.assumeIsolated().whenComplete { _ in self.report(.cancelled) }
            return
        }
        switch result {
        case .success(let channel):
            report(.connected(channel, target: attempt.target, index: attempt.index))
        case .failure(let error):
            attempt.channel?.close(promise: nil)
            if Self.isLocal(error) {
                report(.failed(.error, detail: ErrorText.of(error)))
                return
            }
            pool?.health?.record(index: attempt.index, success: false)
            observer.backendConnectFailed(listener: runtime.name, backend: attempt.target.text, error: error)
            lastFailure = (Self.isTimeout(error), ErrorText.of(error))
            startNextAttempt()
        }
    }

    /// Failures of this host rather than of the backend: no socket, no buffer, no memory, no port.
    static func isLocal(_ error: any Error) -> Bool {
        if let connectionError = error as? NIOConnectionError {
            let errors = connectionError.connectionErrors
            return !errors.isEmpty && errors.allSatisfy { isLocal($0.error) }
        }
        guard let ioError = error as? IOError else { return false }
        return [EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL].contains(ioError.errnoCode)
    }

    static func isTimeout(_ error: any Error) -> Bool {
        if case .connectTimeout = error as? ChannelError { return true }
        if let connectionError = error as? NIOConnectionError {
            return connectionError.connectionErrors.contains { isTimeout($0.error) }
        }
        return false
    }
}

/// Above the backend's `TLSHandler` during a connect attempt: reports the end of the backend TLS
/// handshake (or its failure: an error, or the channel closing), then leaves the pipeline.
final class BackendReadinessHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private var report: ((Result<Void, any Error>) -> Void)?

    init(report: @escaping (Result<Void, any Error>) -> Void) {
        self.report = report
    }

    private func finish(_ result: Result<Void, any Error>) {
        guard let report else { return }
        self.report = nil
        report(result)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tlsEvent = event as? TLSEvent, case .handshakeCompleted = tlsEvent {
            finish(.success(()))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(error))
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(ChannelError.eof))
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension BackendConnector: Sendable {}

@available(*, unavailable)
extension BackendReadinessHandler: Sendable {}
