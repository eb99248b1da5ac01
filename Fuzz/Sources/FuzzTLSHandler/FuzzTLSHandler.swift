#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOEmbedded
import SecProxyTLS

/// One input: what a client sends a TLS listener right after a real ClientHello — the rest of a handshake,
/// alerts, records cut anywhere, or garbage — through the server-side `TLSHandler` on an `EmbeddedChannel`,
/// using only its public API (`TLSHandler(context:)` and channel events).
///
/// Input layout: byte 0 picks the ClientHello (bit 0: TLS 1.2 only, else up to 1.3), whether the client half
/// closes at the end (bit 1) and how the rest is cut into reads (bits 2-7: chunk size 1...64, or whole when
/// 0). The remaining bytes are the client's. Crashes, memory errors and leaks are the findings; with ASan's
/// leak checker on, a connection that keeps OpenSSL objects after its channel is gone is one too.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTLSHandler(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let control = bytes[0]
    let hello = control & 1 == 0 ? Fixture.shared.tls13Hello : Fixture.shared.tls12Hello
    let chunkSize = Int(control >> 2)

    let channel = EmbeddedChannel()
    let sink = Sink()
    do {
        try channel.pipeline.syncOperations.addHandler(TLSHandler(context: Fixture.shared.server))
        try channel.pipeline.syncOperations.addHandler(sink)
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
    } catch {
        fatalError("cannot set up the channel: \(error)")
    }

    feed(hello, to: channel)
    var offset = 1
    while offset < size, channel.isActive {
        let end = chunkSize == 0 ? size : min(size, offset + chunkSize)
        feed(channel.allocator.buffer(bytes: bytes[offset..<end]), to: channel)
        offset = end
    }
    if control & 2 != 0, channel.isActive {
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        drain(channel)
    }
    // What a peer's reset or the proxy's own close does; also ends a connection still in its handshake.
    close(channel)
    precondition(sink.errors <= 1, "more than one TLSError reached the pipeline: \(sink.errors)")
    return 0
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

/// The end of the pipeline: swallows plaintext and counts the errors the handler fires.
private final class Sink: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    var errors = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

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
