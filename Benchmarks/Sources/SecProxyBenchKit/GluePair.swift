import NIOCore
import NIOEmbedded
import SecProxyConfig
import SecProxyCore
import SecProxyTLS

/// Counts what the data path reports; the daemon's observer logs and counts metrics instead, which is
/// not what these benchmarks measure. Used on one thread only.
package final class CountingObserver: ConnectionObserver, @unchecked Sendable {
    package private(set) var closed = 0
    package private(set) var handshakes = 0
    package private(set) var lastReason: CloseReason?
    package private(set) var bytesIn = 0
    package private(set) var bytesOut = 0

    package func connectionClosed(_ summary: ConnectionSummary) {
        closed += 1
        lastReason = summary.reason
        bytesIn += summary.bytesIn
        bytesOut += summary.bytesOut
    }

    package func handshakeCompleted(listener: String, tlsVersion: String, resumed: Bool, seconds: Double) {
        handshakes += 1
    }

    package func backendConnectFailed(listener: String, backend: String, error: any Error) {}
    package func acceptFailed(listener: String, error: IOError, backoff: TimeAmount) {}
}

/// One listener's world for the data-path benchmarks: its runtime (from a TOML snippet, as the daemon
/// reads it), limits and observer, on one `EmbeddedEventLoop`.
package final class DataPathWorld {
    package let loop = EmbeddedEventLoop()
    package let observer = CountingObserver()
    package let tracker = ConnectionTracker(maxConnections: 1_000_000)
    package let limiter = PerIPLimiter()
    package let runtime: ListenerRuntime

    /// - Parameter tls: a `tls` listener with this context (secproxy's TLS handler in the client
    ///   pipeline); nil = a `plain` listener.
    package init(tls: TLSServerContext? = nil) throws {
        let mode = tls == nil ? #"mode = "plain""# : "mode = \"tls\"\n[listener.tls]\ncert = \"c.pem\"\nkey = \"k.pem\""
        let text = """
            [[listener]]
            name = "bench"
            listen = "127.0.0.1:0"
            backends = ["127.0.0.1:8080"]
            \(mode)
            """
        let loaded = ConfigurationLoader.load(text: text, path: "bench.toml", directory: "/")
        guard let configuration = loaded.configuration else {
            throw BenchmarkSetupError("listener configuration: \(loaded.diagnostics)")
        }
        runtime = ListenerRuntime(configuration: configuration.listeners[0], tlsContext: tls)
    }
}

/// A client connection through the real data path — admission, (TLS,) `Connection`, the two
/// `GlueHandler`s — between two `BenchSocket`s: the proxy's client socket and its backend socket.
package struct GluePair {
    package let client: EmbeddedChannel
    package let backend: EmbeddedChannel
    /// The proxy's socket to the client.
    package let clientSocket: BenchSocket
    /// The proxy's socket to the backend.
    package let backendSocket: BenchSocket

    /// Sets the connection up; with `activate`, the client channel is activated at once (a `plain`
    /// listener then wires the backend at once; a `tls` one waits for the handshake).
    /// - Parameters:
    ///   - keepsWrites: whether the two sockets keep what the proxy writes (for a peer), or only count it.
    package init(world: DataPathWorld, keepsWrites: Bool, activate: Bool = true) throws {
        client = EmbeddedChannel(loop: world.loop)
        backend = EmbeddedChannel(loop: world.loop)
        clientSocket = BenchSocket(keepsWrites: keepsWrites)
        backendSocket = BenchSocket(keepsWrites: keepsWrites)
        client.remoteAddress = Self.clientAddress
        client.localAddress = Self.listenAddress
        try client.pipeline.syncOperations.addHandler(clientSocket)
        try backend.pipeline.syncOperations.addHandler(backendSocket)
        try backend.connect(to: Self.backendAddress).wait()
        try DataPathBenchmark.setUpConnection(
            client: client, backend: backend, runtime: world.runtime, tracker: world.tracker,
            limiter: world.limiter, observer: world.observer
        )
        if activate { try self.activate(world) }
    }

    /// The client's connect reaches the proxy: the connection starts.
    package func activate(_ world: DataPathWorld) throws {
        try client.connect(to: Self.clientAddress).wait()
        world.loop.run()
    }

    /// The client sends `buffer`; it is read and forwarded to the backend.
    @inline(__always)
    package func clientSends(_ buffer: ByteBuffer) {
        clientSocket.inbox.append(buffer)
        clientSocket.deliver()
    }

    /// The backend sends `buffer`; it is read and forwarded to the client.
    @inline(__always)
    package func backendSends(_ buffer: ByteBuffer) {
        backendSocket.inbox.append(buffer)
        backendSocket.deliver()
    }

    /// The graceful end of a plain connection: the client's FIN, passed on to the backend, then the
    /// backend's FIN, passed on to the client; then both channels close.
    package func closeGracefully(_ world: DataPathWorld) {
        clientSocket.peerSendsFIN()
        world.loop.run()
        backendSocket.peerSendsFIN()
        world.loop.run()
    }

    package static let clientAddress = try! SocketAddress(ipAddress: "127.0.0.1", port: 40000)
    package static let listenAddress = try! SocketAddress(ipAddress: "127.0.0.1", port: 8443)
    package static let backendAddress = try! SocketAddress(ipAddress: "127.0.0.1", port: 8080)
}
