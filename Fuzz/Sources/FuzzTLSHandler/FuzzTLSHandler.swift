#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOEmbedded
import SecProxyTLS

/// One input: what a client sends a TLS listener, through the server-side `TLSHandler` on an
/// `EmbeddedChannel`, using only its public API (`TLSHandler(context:)` and channel events).
///
/// Byte 0 chooses the scenario; the remaining bytes are the client's:
/// - bit 0: the client offers TLS 1.2 only, else up to 1.3;
/// - bits 2-3: 0 or 3 = a real ClientHello, then the bytes as raw records (the rest of a handshake, alerts,
///   records cut anywhere, garbage); 1 = a full handshake with a client-side `TLSHandler`, then the bytes as
///   raw records (forged or broken records on an established connection); 2 = a full handshake, then the bytes
///   as application data that the client encrypts (the server echoes it);
/// - bit 1: the client half-closes at the end (TCP FIN, or close_notify in scenario 2);
/// - bits 4-7: how the bytes are cut into reads or writes: 16 × n bytes each, or all at once when 0.
///
/// Crashes, memory errors and leaks are the findings (with ASan's leak checker on, a connection that keeps
/// OpenSSL objects after its channel is gone is one); besides, at most one `TLSError` reaches the pipeline.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTLSHandler(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let control = bytes[0]
    let maximum: TLSProtocolVersion = control & 1 == 0 ? .tls13 : .tls12
    let scenario = (control >> 2) & 3
    let halfClose = control & 2 != 0
    let chunkSize = Int(control >> 4) * 16
    let payload = bytes[1...]

    let server = EmbeddedChannel()
    let sink = Sink(echo: scenario == 2)
    do {
        try server.pipeline.syncOperations.addHandler(TLSHandler(context: Fixture.shared.server))
        try server.pipeline.syncOperations.addHandler(sink)
        try server.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
    } catch {
        fatalError("cannot set up the server channel: \(error)")
    }

    switch scenario {
    case 1, 2:
        let client = Fixture.shared.connectedClient(maximum: maximum)
        pump(client, server)
        if scenario == 1 {
            drain(client)
            feedRaw(payload, chunkSize: chunkSize, to: server, halfClose: halfClose)
        } else {
            var offset = payload.startIndex
            while offset < payload.endIndex, server.isActive, client.isActive {
                let end = chunkSize == 0 ? payload.endIndex : min(payload.endIndex, offset + chunkSize)
                client.writeAndFlush(client.allocator.buffer(bytes: payload[offset..<end]), promise: nil)
                pump(client, server)
                offset = end
            }
            if halfClose, client.isActive {
                client.close(mode: .output, promise: nil)
                pump(client, server)
            }
        }
        close(client)
    default:
        feed(maximum == .tls13 ? Fixture.shared.tls13Hello : Fixture.shared.tls12Hello, to: server)
        feedRaw(payload, chunkSize: chunkSize, to: server, halfClose: halfClose)
    }
    // What a peer's reset or the proxy's own close does; also ends a connection still in its handshake.
    close(server)
    precondition(sink.errors <= 1, "more than one TLSError reached the pipeline: \(sink.errors)")
    return 0
}

/// The client's bytes as they would arrive from the network, cut into reads; then maybe a TCP half-close.
private func feedRaw(
    _ payload: Slice<UnsafeBufferPointer<UInt8>>,
    chunkSize: Int,
    to channel: EmbeddedChannel,
    halfClose: Bool
) {
    var offset = payload.startIndex
    while offset < payload.endIndex, channel.isActive {
        let end = chunkSize == 0 ? payload.endIndex : min(payload.endIndex, offset + chunkSize)
        feed(channel.allocator.buffer(bytes: payload[offset..<end]), to: channel)
        offset = end
    }
    if halfClose, channel.isActive {
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        drain(channel)
    }
}

/// Moves ciphertext both ways between two embedded channels until neither has anything more to say.
private func pump(_ client: EmbeddedChannel, _ server: EmbeddedChannel) {
    var moved = true
    var rounds = 0
    while moved, rounds < 64 {
        moved = false
        rounds += 1
        while let buffer = try? client.readOutbound(as: ByteBuffer.self) {
            moved = true
            if server.isActive { _ = try? server.writeInbound(buffer) }
        }
        while let buffer = try? server.readOutbound(as: ByteBuffer.self) {
            moved = true
            if client.isActive { _ = try? client.writeInbound(buffer) }
        }
    }
}

/// Closes `channel` and runs the loop until it is closed. Not `close().wait()`: the handler completes a close
/// promise with the channel's `closeFuture`, which an `EmbeddedEventLoop` fulfils only when it runs, so
/// waiting on it before running the loop would block forever (a real event loop gets there on its own).
private func close(_ channel: EmbeddedChannel) {
    channel.close(promise: nil)
    channel.embeddedEventLoop.run()
    _ = try? channel.finish(acceptAlreadyClosed: true)
}

/// Writes one read's worth of bytes and takes whatever the handler answered.
private func feed(_ buffer: ByteBuffer, to channel: EmbeddedChannel) {
    _ = try? channel.writeInbound(buffer)
    drain(channel)
}

/// Discards the handler's output (the server's flight, alerts) so that the channel does not pile it up.
private func drain(_ channel: EmbeddedChannel) {
    while let _ = try? channel.readOutbound(as: ByteBuffer.self) {}
}

/// The end of the pipeline: swallows or echoes plaintext, closes its output after the client's, and counts
/// the errors the handler fires.
private final class Sink: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let echo: Bool
    var errors = 0

    init(echo: Bool) {
        self.echo = echo
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if echo { context.write(data, promise: nil) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if echo { context.flush() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(mode: .output, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if error is TLSError { errors += 1 }
    }
}

/// A throwaway certificate and key, the server context, and two real ClientHellos made by the client-side
/// `TLSHandler` once per process.
private final class Fixture {
    nonisolated(unsafe) static let shared = Fixture()

    let server: TLSServerContext
    let tls13Hello: ByteBuffer
    let tls12Hello: ByteBuffer

    private init() {
        var template = Array("/tmp/secproxy-fuzz-tls-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed") }
        let folder = String(cString: made)
        let command =
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=fuzz.test "
            + "-addext subjectAltName=DNS:fuzz.test -keyout \(folder)/key.pem -out \(folder)/cert.pem 2>/dev/null"
        guard system(command) == 0 else { fatalError("openssl req failed: \(command)") }
        do {
            server = try TLSServerContext(
                configuration: TLSServerConfiguration(
                    certificateChainFile: "\(folder)/cert.pem",
                    privateKeyFile: "\(folder)/key.pem"
                )
            )
        } catch {
            fatalError("server context: \(error)")
        }
        tls13Hello = Self.clientHello(maximum: .tls13)
        tls12Hello = Self.clientHello(maximum: .tls12)
        for file in ["key.pem", "cert.pem"] { unlink("\(folder)/\(file)") }
        rmdir(folder)
    }

    /// Client contexts by highest version: no verification, no resumption (every input starts afresh).
    private let clients: [TLSProtocolVersion: TLSClientContext] = {
        var contexts: [TLSProtocolVersion: TLSClientContext] = [:]
        for maximum in [TLSProtocolVersion.tls12, .tls13] {
            var configuration = TLSClientConfiguration()
            configuration.maximumVersion = maximum
            configuration.sessionResumption = false
            do {
                contexts[maximum] = try TLSClientContext(configuration: configuration)
            } catch {
                fatalError("client context: \(error)")
            }
        }
        return contexts
    }()

    /// A new client channel, active, its ClientHello waiting in its outbound buffer.
    func connectedClient(maximum: TLSProtocolVersion) -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        do {
            try channel.pipeline.syncOperations.addHandler(TLSHandler(context: clients[maximum]!, serverName: "fuzz.test"))
            try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        } catch {
            fatalError("client channel: \(error)")
        }
        return channel
    }

    /// What a client-side `TLSHandler` sends first when its channel becomes active.
    private static func clientHello(maximum: TLSProtocolVersion) -> ByteBuffer {
        var configuration = TLSClientConfiguration()
        configuration.maximumVersion = maximum
        configuration.sessionResumption = false
        do {
            let context = try TLSClientContext(configuration: configuration)
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(TLSHandler(context: context, serverName: "fuzz.test"))
            try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
            var hello = channel.allocator.buffer(capacity: 512)
            while var part = try channel.readOutbound(as: ByteBuffer.self) { hello.writeBuffer(&part) }
            precondition(hello.readableBytes > 0 && hello.getInteger(at: 0, as: UInt8.self) == 0x16, "no ClientHello")
            close(channel)
            return hello
        } catch {
            fatalError("client hello: \(error)")
        }
    }
}
