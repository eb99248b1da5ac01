import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import SecProxyConfig
import SecProxyTLS
import XCTest

@testable import SecProxyCore

/// Records what the data path reports.
final class RecordingObserver: ConnectionObserver {
    private let lock = NIOLockedValueBox<[ConnectionSummary]>([])
    private let failures = NIOLockedValueBox<[String]>([])

    var summaries: [ConnectionSummary] { lock.withLockedValue { $0 } }
    var connectFailures: [String] { failures.withLockedValue { $0 } }

    func connectionClosed(_ summary: ConnectionSummary) { lock.withLockedValue { $0.append(summary) } }
    func handshakeCompleted(listener: String, tlsVersion: String, resumed: Bool, seconds: Double) {}
    func backendConnectFailed(listener: String, backend: String, error: any Error) {
        failures.withLockedValue { $0.append(backend) }
    }
    func acceptFailed(listener: String, error: IOError, backoff: TimeAmount) {}
}

/// A connector that hands out `EmbeddedChannel` backends on the test's loop when the test says so.
final class EmbeddedConnector: BackendConnecting {
    let loop: EmbeddedEventLoop
    private var onOutcome: ((BackendConnectOutcome) -> Void)?
    private(set) var started = false
    private(set) var cancelled = false
    /// Connect as soon as dialling starts, with this socket.
    var connectAtOnce: SimulatedSocket?
    private(set) var socket: SimulatedSocket?
    private(set) var channel: EmbeddedChannel?

    init(loop: EmbeddedEventLoop, connectAtOnce: SimulatedSocket? = SimulatedSocket()) {
        self.loop = loop
        self.connectAtOnce = connectAtOnce
    }

    func start(pool: BackendPool, onOutcome: @escaping (BackendConnectOutcome) -> Void) {
        started = true
        self.onOutcome = onOutcome
        if let socket = connectAtOnce { connect(socket) }
    }

    /// The backend accepts; `socket` stands in for its socket.
    @discardableResult
    func connect(_ socket: SimulatedSocket = SimulatedSocket()) -> SimulatedSocket {
        let channel = EmbeddedChannel(handler: socket, loop: loop)
        try! channel.connect(to: try! SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
        self.socket = socket
        self.channel = channel
        report(.connected(channel, target: BackendTarget(backendAddress), index: 0))
        return socket
    }

    func fail(_ reason: CloseReason) {
        report(.failed(reason, detail: "test"))
    }

    func cancel() {
        cancelled = true
        report(.cancelled)
    }

    private func report(_ outcome: BackendConnectOutcome) {
        guard let onOutcome else { return }
        self.onOutcome = nil
        onOutcome(outcome)
    }

    private var backendAddress: BackendAddress {
        ConfigurationLoader.load(text: Self.minimalConfig, path: "t.toml", directory: "/").configuration!
            .listeners[0].backends[0]
    }

    static let minimalConfig = """
        [[listener]]
        name = "t"
        listen = "127.0.0.1:0"
        mode = "plain"
        backends = ["127.0.0.1:8080"]
        """
}

/// One listener's world on an `EmbeddedEventLoop`: runtime, limits, observer; makes client connections
/// through the real pipeline set-up (admission, TLS, glue) with simulated sockets and an embedded backend.
final class ConnectionHarness {
    let loop = EmbeddedEventLoop()
    let observer = RecordingObserver()
    let tracker: ConnectionTracker
    let limiter = PerIPLimiter()
    let runtime: ListenerRuntime
    /// The connector of each client connection made, in order.
    private(set) var connectors: [EmbeddedConnector] = []
    /// Whether new connections' backends accept at once.
    var backendConnectsAtOnce = true
    /// Whether new backends' peers read at once.
    var backendReads = true

    /// - Parameter listenerTOML: the keys of the `[[listener]]` table after `name`/`listen`/`backends`
    ///   (e.g. `mode = "plain"`, timeouts).
    init(
        listenerTOML: String = #"mode = "plain""#, tlsContext: TLSServerContext? = nil, maxConnections: Int = 100
    ) throws {
        let text = """
            [[listener]]
            name = "t"
            listen = "127.0.0.1:0"
            backends = ["127.0.0.1:8080"]
            \(listenerTOML)
            """
        let loaded = ConfigurationLoader.load(text: text, path: "t.toml", directory: "/")
        let configuration = try XCTUnwrap(loaded.configuration, "\(loaded.diagnostics)")
        runtime = ListenerRuntime(configuration: configuration.listeners[0], tlsContext: tlsContext)
        tracker = ConnectionTracker(maxConnections: maxConnections)
    }

    /// A client connection from `address`: accepted, admitted and set up as the listener does it.
    func connect(
        from address: String = "127.0.0.1", port: Int = 40000, socket: SimulatedSocket = SimulatedSocket()
    ) throws -> ClientEnd {
        let connector = EmbeddedConnector(
            loop: loop, connectAtOnce: backendConnectsAtOnce ? SimulatedSocket(peerReads: backendReads) : nil
        )
        connectors.append(connector)
        let channel = EmbeddedChannel(loop: loop)
        channel.remoteAddress = try SocketAddress(ipAddress: address, port: port)
        channel.localAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 8443)
        try channel.pipeline.syncOperations.addHandler(socket)
        if runtime.acceptProxyProtocol {
            try channel.pipeline.syncOperations.addHandler(ProxyProtocolDecoder())
        }
        try channel.pipeline.syncOperations.addHandler(
            AdmissionHandler(
                runtime: runtime, tracker: tracker, limiter: limiter, observer: observer,
                makeConnector: { _ in connector }
            )
        )
        try channel.connect(to: channel.remoteAddress!).wait()
        loop.run()
        return ClientEnd(channel: channel, socket: socket, connector: connector)
    }

    /// Lets the simulated network move until nothing is left to do.
    func settle() {
        loop.run()
    }

    /// Moves the clock (timers fire), then settles.
    func advance(_ amount: TimeAmount) {
        loop.advanceTime(by: amount)
        loop.run()
    }
}

/// A client connection under test: its channel, the socket under it, and its backend.
struct ClientEnd {
    let channel: EmbeddedChannel
    let socket: SimulatedSocket
    let connector: EmbeddedConnector
    var backend: SimulatedSocket { connector.socket! }
}

extension ByteBuffer {
    /// `count` bytes of a pattern that differs per `seed`, so that misordering shows.
    static func pattern(_ count: Int, seed: UInt8 = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(count)
        for index in 0..<count { buffer.writeInteger(UInt8(truncatingIfNeeded: index &* 31 &+ Int(seed))) }
        return buffer
    }
}
