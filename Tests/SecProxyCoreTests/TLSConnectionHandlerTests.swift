import COpenSSL
import NIOCore
import NIOEmbedded
import SecProxyTestSupport
import XCTest

@testable import SecProxyCore
@testable import SecProxyTLS

/// What a TLS client on an `EmbeddedChannel` received.
private final class ClientRecorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var received = ByteBuffer()
    var handshakes = 0
    var inputClosed = false
    var errors: [String] = []
    var inactive = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received.writeBuffer(&buffer)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tlsEvent = event as? TLSEvent, case .handshakeCompleted = tlsEvent { handshakes += 1 }
        if case ChannelEvent.inputClosed = event { inputClosed = true }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        errors.append("\(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        inactive = true
    }
}

/// The glue pair behind a real TLS handler (the project's OpenSSL module) on `EmbeddedChannel`s: a TLS
/// client and the proxy's client channel joined by a simulated wire, time advanced by the test.
final class TLSConnectionHandlerTests: XCTestCase {
    private var temporary: TemporaryDirectory!
    private var ca: TestCA!
    private var serverContext: TLSServerContext!
    private var clientContext: TLSClientContext!

    override func setUpWithError() throws {
        temporary = try TemporaryDirectory(prefix: "secproxy-core-tls")
        ca = try TestCA(directory: temporary.file("certs"))
        let cert = try ca.serverCertificate("server")
        serverContext = try TLSServerContext(
            configuration: TLSServerConfiguration(certificateChainFile: cert.certPath, privateKeyFile: cert.keyPath)
        )
        var client = TLSClientConfiguration()
        client.trustRootsFile = ca.caCertPath
        client.verifyHostname = "localhost"
        clientContext = try TLSClientContext(configuration: client)
    }

    override func tearDown() {
        temporary?.cleanup()
        temporary = nil
    }

    private struct TLSClient {
        let channel: EmbeddedChannel
        let socket: SimulatedSocket
        let recorder: ClientRecorder
        let wire: Wire
        let end: ClientEnd
    }

    private func tlsWorld(_ listenerTOML: String = "") throws -> ConnectionHarness {
        try ConnectionHarness(
            listenerTOML: "mode = \"tls\"\n\(listenerTOML)\n[listener.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"",
            tlsContext: serverContext
        )
    }

    /// A TLS client wired to a new connection of `world`; `proxySide` is the proxy's client socket.
    private func connect(_ world: ConnectionHarness, proxySide: SimulatedSocket = SimulatedSocket(),
                         clientReads: Bool = true) throws -> TLSClient {
        let end = try world.connect(socket: proxySide)
        let socket = SimulatedSocket(peerReads: true)
        let recorder = ClientRecorder()
        let channel = EmbeddedChannel(loop: world.loop)
        try channel.pipeline.syncOperations.addHandler(socket)
        try channel.pipeline.syncOperations.addHandler(TLSHandler(context: clientContext, serverName: "localhost"))
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8443)).wait()
        let wire = Wire(socket, proxySide)
        wire.pump(settle: world.settle)
        return TLSClient(channel: channel, socket: socket, recorder: recorder, wire: wire, end: end)
    }

    func testHandshakeThenBytesBothWaysThenCloseNotifyBothWays() throws {
        let world = try tlsWorld()
        let client = try connect(world)
        XCTAssertEqual(client.recorder.handshakes, 1)
        XCTAssertTrue(client.end.connector.started, "dialled once the handshake finished")

        client.channel.writeAndFlush(ByteBuffer.pattern(40_000, seed: 1), promise: nil)
        client.wire.pump(settle: world.settle)
        XCTAssertEqual(client.end.backend.taken, .pattern(40_000, seed: 1))

        client.end.backend.peerSends(.pattern(50_000, seed: 2))
        client.wire.pump(settle: world.settle)
        XCTAssertEqual(client.recorder.received, .pattern(50_000, seed: 2))

        // close_notify + FIN from the client: a FIN to the backend; the backend's reply still arrives.
        client.channel.close(mode: .output, promise: nil)
        client.wire.pump(settle: world.settle)
        XCTAssertTrue(client.end.backend.finSent)
        client.end.backend.peerSends(.pattern(3_000, seed: 3))
        client.end.backend.peerSendsFIN()
        client.wire.pump(settle: world.settle)
        XCTAssertEqual(client.recorder.received.readableBytes, 53_000)
        XCTAssertTrue(client.recorder.inputClosed, "the backend's FIN reaches the client as close_notify")
        let summary = try XCTUnwrap(world.observer.summaries.first)
        XCTAssertEqual(summary.reason, .clientClosed)
        XCTAssertEqual(summary.bytesIn, 40_000)
        XCTAssertEqual(summary.bytesOut, 53_000)
        XCTAssertEqual(summary.tlsVersion, "TLSv1.3")
        XCTAssertEqual(summary.sni, "localhost")
        XCTAssertEqual(world.tracker.handshakesInProgress, 0)
    }

    func testBackendFINAfterClientCloseNotifyDoesNotDropBytesQueuedForASlowClient() throws {
        let world = try tlsWorld()
        let proxySide = SimulatedSocket()
        let client = try connect(world, proxySide: proxySide)
        proxySide.peerReads = false
        client.end.backend.peerSends(.pattern(30_000, seed: 5))
        world.settle()
        client.channel.close(mode: .output, promise: nil)
        client.wire.pump(settle: world.settle)
        XCTAssertTrue(client.end.backend.finSent)
        client.end.backend.peerSendsFIN()  // escalates to a full close of the backend channel
        client.wire.pump(settle: world.settle)
        XCTAssertTrue(client.end.backend.closed)
        XCTAssertTrue(world.observer.summaries.isEmpty, "the client has not taken its bytes yet")

        proxySide.peerReads = true
        for _ in 0..<10 {
            proxySide.drain()
            client.wire.pump(settle: world.settle)
        }
        XCTAssertEqual(client.recorder.received, .pattern(30_000, seed: 5))
        XCTAssertTrue(client.recorder.inputClosed)
        XCTAssertEqual(world.observer.summaries.first?.bytesOut, 30_000)
    }

    func testHandshakeTimeoutIsAnAbsoluteDeadlineFromTheAccept() throws {
        let world = try tlsWorld(#"handshake_timeout = "300ms""#)
        let end = try world.connect()
        XCTAssertEqual(world.tracker.handshakesInProgress, 1)
        world.advance(.milliseconds(150))
        end.socket.peerSends(ByteBuffer(bytes: [0x16, 0x03, 0x01]))  // a trickled record header
        world.settle()
        world.advance(.milliseconds(149))
        XCTAssertFalse(end.socket.closed)
        world.advance(.milliseconds(1))
        XCTAssertTrue(end.socket.closed, "trickling bytes does not move the deadline")
        XCTAssertFalse(end.connector.started)
        XCTAssertEqual(world.observer.summaries.first?.reason, .handshakeTimeout)
        XCTAssertEqual(world.tracker.handshakesInProgress, 0)
        XCTAssertEqual(world.tracker.count, 0)
    }

    func testIdleTimeoutAbortsATLSConnectionAtOnceWithoutWaitingForCloseNotify() throws {
        let world = try tlsWorld(#"idle_timeout = "300ms""#)
        let proxySide = SimulatedSocket()
        let client = try connect(world, proxySide: proxySide)
        proxySide.peerReads = false  // the client stops reading: close_notify could never be written
        client.end.backend.peerSends(.pattern(1_000, seed: 1))
        world.settle()
        world.advance(.milliseconds(301))
        XCTAssertTrue(proxySide.closed)
        XCTAssertEqual(world.observer.summaries.first?.reason, .idleTimeout)
        XCTAssertEqual(world.observer.summaries.first?.bytesOut, 0, "queued, never written")
    }

    func testGarbageInsteadOfAClientHelloIsAHandshakeFailure() throws {
        let world = try tlsWorld()
        let end = try world.connect()
        end.socket.peerSends(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        world.settle()
        XCTAssertTrue(end.socket.closed)
        XCTAssertFalse(end.connector.started)
        let summary = try XCTUnwrap(world.observer.summaries.first)
        XCTAssertEqual(summary.reason, .handshakeFailed)
        XCTAssertEqual(summary.detail, "http request")
    }

    /// A client that sends KeyUpdate requests (each answered by OpenSSL on its own) and never reads: what
    /// piles up for it stays bounded, the proxy stops reading it, and `idle_timeout` ends the connection.
    func testKeyUpdateFloodFromAClientThatNeverReadsStaysBounded() throws {
        let world = try tlsWorld(#"idle_timeout = "300ms""#)
        let proxySide = SimulatedSocket()
        let end = try world.connect(socket: proxySide)
        // A raw OpenSSL client, driven by hand so that it can be told to update its keys.
        let client = try TLSConnection(role: .client(clientContext, serverName: "localhost"), allocator: .init())
        var handshakeDone = false
        for _ in 0..<20 where !handshakeDone {
            if case .complete = client.doHandshake() { handshakeDone = true }
            if let out = client.takeOutbound() { proxySide.peerSends(out) }
            world.settle()
            if let back = proxySide.takeNew() { client.receive(back) }
        }
        XCTAssertTrue(handshakeDone)
        XCTAssertTrue(end.connector.started)

        proxySide.peerReads = false
        let reads = { proxySide.readRequests }
        var sent = 0
        var readsAtLimit: Int?
        for round in 0..<5_000 {
            XCTAssertEqual(SSL_key_update(client.ssl, SSL_KEY_UPDATE_REQUESTED), 1)
            _ = client.doHandshake()
            if let out = client.takeOutbound() {
                sent += out.readableBytes
                proxySide.peerSends(out)
            }
            world.settle()
            XCTAssertLessThanOrEqual(
                proxySide.queuedBytes, TLSHandler.maximumOwnOutbound + 4096,
                "round \(round): OpenSSL's own output piles up for a client that does not read"
            )
            if proxySide.queuedBytes > TLSHandler.maximumOwnOutbound, readsAtLimit == nil { readsAtLimit = reads() }
        }
        let limitReached = try XCTUnwrap(readsAtLimit, "KeyUpdate answers never exceeded the limit (sent \(sent))")
        XCTAssertLessThanOrEqual(reads(), limitReached + 1, "the client is not read while its answers are unsent")
        XCTAssertGreaterThan(sent, 4 * TLSHandler.maximumOwnOutbound, "the client sent far more than is held")

        world.advance(.milliseconds(301))
        XCTAssertTrue(proxySide.closed)
        XCTAssertEqual(world.observer.summaries.first?.reason, .idleTimeout)
    }
}
