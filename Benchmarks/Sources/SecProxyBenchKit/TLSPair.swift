import Foundation
import NIOCore
import NIOEmbedded
import SecProxyTLS
import SecProxyTestSupport

/// The certificates and TLS contexts every TLS benchmark uses, made once per process: a throwaway CA and
/// an ECDSA P-256 server certificate for `localhost` (the `openssl` command line, as the tests make them),
/// in a temporary directory removed at exit.
package final class TLSMaterial: @unchecked Sendable {
    package static let shared: TLSMaterial = {
        do {
            return try TLSMaterial()
        } catch {
            fatalError("making the benchmark certificates failed: \(error)")
        }
    }()

    package let directory: TemporaryDirectory
    /// secproxy's defaults: TLS 1.2–1.3, session tickets on.
    package let server: TLSServerContext
    /// A client that offers TLS 1.3 and keeps no session: every handshake is a full one.
    package let fullClient13: TLSClientContext
    /// A client that offers TLS 1.3 and offers its last session (ticket) on the next connection.
    package let resumingClient13: TLSClientContext
    /// A client that offers TLS 1.2 only and keeps no session.
    package let fullClient12: TLSClientContext
    /// A client that offers TLS 1.2 only and resumes (RFC 5077 ticket).
    package let resumingClient12: TLSClientContext

    private init() throws {
        directory = try TemporaryDirectory(prefix: "secproxy-bench")
        let ca = try TestCA(directory: directory.file("ca"))
        let certificate = try ca.serverCertificate("server")
        server = try TLSServerContext(
            configuration: TLSServerConfiguration(
                certificateChainFile: certificate.certPath, privateKeyFile: certificate.keyPath
            )
        )
        // The clients do not verify the chain: what is measured is meant to be the server's work; the
        // client's own (key share, signature check) cannot be left out of a handshake anyway.
        func client(_ version: TLSProtocolVersion, resumption: Bool) throws -> TLSClientContext {
            var configuration = TLSClientConfiguration()
            configuration.minimumVersion = .tls12
            configuration.maximumVersion = version
            configuration.sessionResumption = resumption
            return try TLSClientContext(configuration: configuration)
        }
        fullClient13 = try client(.tls13, resumption: false)
        resumingClient13 = try client(.tls13, resumption: true)
        fullClient12 = try client(.tls12, resumption: false)
        resumingClient12 = try client(.tls12, resumption: true)
        atexit { TLSMaterial.shared.directory.cleanup() }
    }
}

/// The top of a TLS benchmark channel: counts handshakes (and resumed ones) and the plaintext that comes
/// up, and lets the benchmark write from the top of the pipeline as an application handler would.
package final class TLSEndpoint: ChannelInboundHandler {
    package typealias InboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    package private(set) var handshakes = 0
    package private(set) var resumed = 0
    package private(set) var version = ""
    package private(set) var cipher = ""
    package private(set) var bytesReceived = 0
    package private(set) var errors = 0
    package private(set) var context: ChannelHandlerContext?

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        bytesReceived += unwrapInboundIn(data).readableBytes
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSEvent.handshakeCompleted(let info) = event {
            handshakes += 1
            if info.resumed { resumed += 1 }
            version = info.version
            cipher = info.cipher
        }
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        errors += 1
    }

    /// Writes and flushes `buffer` from the top of the pipeline.
    package func send(_ buffer: ByteBuffer) {
        context?.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }
}

@available(*, unavailable)
extension TLSEndpoint: Sendable {}

/// A TLS client and a TLS server, each a `TLSHandler` on its own `EmbeddedChannel`, joined by two
/// `BenchSocket`s whose bytes the benchmark shuttles across.
package struct TLSPair {
    package let server: EmbeddedChannel
    package let client: EmbeddedChannel
    package let serverSocket: BenchSocket
    package let clientSocket: BenchSocket
    package let serverEnd: TLSEndpoint
    package let clientEnd: TLSEndpoint

    /// Builds the two channels; nothing is sent until `connect()`.
    package init(
        loop: EmbeddedEventLoop, server serverContext: TLSServerContext, client clientContext: TLSClientContext
    ) throws {
        server = EmbeddedChannel(loop: loop)
        client = EmbeddedChannel(loop: loop)
        serverSocket = BenchSocket(keepsWrites: true)
        clientSocket = BenchSocket(keepsWrites: true)
        serverEnd = TLSEndpoint()
        clientEnd = TLSEndpoint()
        try server.pipeline.syncOperations.addHandlers([serverSocket, TLSHandler(context: serverContext), serverEnd])
        try client.pipeline.syncOperations.addHandlers([
            clientSocket, TLSHandler(context: clientContext, serverName: "localhost"), clientEnd,
        ])
    }

    /// Activates both channels (the client sends its ClientHello) and runs the handshake to its end,
    /// tickets included.
    package func connect() throws {
        try server.connect(to: Self.address).wait()
        try client.connect(to: Self.address).wait()
        clientSocket.shuttle(with: serverSocket)
    }

    /// Closes both channels: close_notify each way, then the channels.
    package func close() {
        client.close(promise: nil)
        clientSocket.shuttle(with: serverSocket)
        server.close(promise: nil)
        clientSocket.shuttle(with: serverSocket)
    }

    package static let address = try! SocketAddress(ipAddress: "127.0.0.1", port: 8443)
}

/// Thrown when a benchmark's world did not do what it is meant to measure.
package struct BenchmarkSetupError: Error, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}
