import Foundation
import NIOCore
import NIOPosix
import SecProxyTLS
import SecProxyTestSupport
import XCTest

/// `SecProxyTestSupport.waitUntil` with this target's argument order (what is awaited first).
func waitUntil(
    _ what: String,
    timeout: TimeInterval = 15,
    _ condition: () -> Bool
) throws {
    try SecProxyTestSupport.waitUntil(timeout: timeout, what, condition)
}

/// What one side of a test connection saw; written on the event loop, read by the test thread.
final class ConnectionLog: @unchecked Sendable {
    private let lock = NSLock()
    private var _handshakes: [TLSSessionInfo] = []
    private var _tlsErrors: [TLSError] = []
    private var _otherErrors: [String] = []
    private var _inputClosed = 0
    private var _closed = 0
    private var _received = Data()

    func record(handshake info: TLSSessionInfo) { self.lock.withLock { self._handshakes.append(info) } }
    func record(error: Error) {
        self.lock.withLock {
            if let error = error as? TLSError {
                self._tlsErrors.append(error)
            } else {
                self._otherErrors.append("\(error)")
            }
        }
    }
    func recordInputClosed() { self.lock.withLock { self._inputClosed += 1 } }
    func recordClosed() { self.lock.withLock { self._closed += 1 } }
    func record(bytes buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { raw in
            self.lock.withLock { self._received.append(contentsOf: raw) }
        }
    }

    var handshakes: [TLSSessionInfo] { self.lock.withLock { self._handshakes } }
    var tlsErrors: [TLSError] { self.lock.withLock { self._tlsErrors } }
    var otherErrors: [String] { self.lock.withLock { self._otherErrors } }
    var inputClosedCount: Int { self.lock.withLock { self._inputClosed } }
    var closedCount: Int { self.lock.withLock { self._closed } }
    var received: Data { self.lock.withLock { self._received } }
    var receivedCount: Int { self.lock.withLock { self._received.count } }
}

/// Records everything passing up the pipeline, then passes it on.
final class LoggingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let log: ConnectionLog

    init(log: ConnectionLog) {
        self.log = log
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.log.record(bytes: self.unwrapInboundIn(data))
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let info) = event as? TLSEvent {
            self.log.record(handshake: info)
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            self.log.recordInputClosed()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.log.record(error: error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.log.recordClosed()
        context.fireChannelInactive()
    }
}

/// What the test server does with a connection.
enum ServerBehavior: Sendable {
    /// Echo everything; on input closed, close the output.
    case echo
    /// On handshake completion write this and close the channel (`close(mode: .all)`).
    case sendAndClose(String)
}

/// The application side of the test server.
final class ServerApplicationHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let behavior: ServerBehavior
    /// autoRead is off: read once when active, then only after data arrived (as a proxy holding
    /// reads for backpressure would); the TLS handler must keep the handshake going by itself.
    private let manualRead: Bool
    private var gotData = false

    init(behavior: ServerBehavior, manualRead: Bool) {
        self.behavior = behavior
        self.manualRead = manualRead
    }

    func channelActive(context: ChannelHandlerContext) {
        if self.manualRead { context.read() }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.gotData = true
        switch self.behavior {
        case .echo:
            context.write(data, promise: nil)
        case .sendAndClose:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        if self.manualRead && self.gotData {
            self.gotData = false
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(mode: .output, promise: nil)
        } else if case .handshakeCompleted = event as? TLSEvent, case .sendAndClose(let text) = self.behavior {
            context.write(self.wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
            context.flush()
            context.close(mode: .all, promise: nil)
        }
    }
}

/// A TLS server on 127.0.0.1, port 0.
final class TestTLSServer {
    let channel: Channel
    let log = ConnectionLog()

    init(
        group: EventLoopGroup,
        context: TLSServerContext,
        behavior: ServerBehavior = .echo,
        autoRead: Bool = true
    ) throws {
        let log = self.log
        self.channel = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.autoRead, value: autoRead)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        TLSHandler(context: context),
                        LoggingHandler(log: log),
                        ServerApplicationHandler(behavior: behavior, manualRead: !autoRead),
                    ])
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .wait()
    }

    var port: Int { self.channel.localAddress!.port! }

    func close() {
        try? self.channel.close().wait()
    }
}

/// A client connection, either TLS (our `TLSHandler`) or plain TCP.
final class TestClient {
    let channel: Channel
    let log = ConnectionLog()

    /// - Parameters:
    ///   - context: nil = plain TCP (for garbage and EOF tests).
    init(group: EventLoopGroup, port: Int, context: TLSClientContext?, serverName: String? = nil) throws {
        let log = self.log
        self.channel = try ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(
                            TLSHandler(context: context, serverName: serverName)
                        )
                    }
                    try channel.pipeline.syncOperations.addHandler(LoggingHandler(log: log))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .wait()
    }

    func waitForHandshake(timeout: TimeInterval = 15) throws -> TLSSessionInfo {
        try waitUntil("client handshake", timeout: timeout) {
            !self.log.handshakes.isEmpty || !self.log.tlsErrors.isEmpty || self.log.closedCount > 0
        }
        guard let info = self.log.handshakes.first else {
            throw TestFailure("client handshake failed: \(self.log.tlsErrors) \(self.log.otherErrors)")
        }
        return info
    }

    func waitForError(timeout: TimeInterval = 15) throws -> TLSError {
        try waitUntil("client TLS error", timeout: timeout) { !self.log.tlsErrors.isEmpty }
        return self.log.tlsErrors[0]
    }

    func waitForClose(timeout: TimeInterval = 15) throws {
        try waitUntil("client channel closed", timeout: timeout) { self.log.closedCount > 0 }
    }

    /// The peer closed (FIN seen as input closed on a half-closable channel, or a full close).
    func waitForEOF(timeout: TimeInterval = 15) throws {
        try waitUntil("EOF from the server", timeout: timeout) {
            self.log.inputClosedCount > 0 || self.log.closedCount > 0
        }
    }

    func write(_ bytes: [UInt8]) -> EventLoopFuture<Void> {
        self.channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func write(_ text: String) -> EventLoopFuture<Void> {
        self.channel.writeAndFlush(ByteBuffer(string: text))
    }

    func close() {
        try? self.channel.close().wait()
    }
}

/// Waits for a future with a deadline.
func awaitFuture<T: Sendable>(_ future: EventLoopFuture<T>, timeout: TimeInterval = 15) throws -> T {
    let promise = future.eventLoop.makePromise(of: T.self)
    future.cascade(to: promise)
    let timer = future.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
        promise.fail(TestFailure("timed out after \(timeout)s"))
    }
    defer { timer.cancel() }
    return try promise.futureResult.wait()
}

/// `count` random bytes.
func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { raw in
        var offset = 0
        while offset < raw.count {
            var word = generator.next()
            let n = min(8, raw.count - offset)
            withUnsafeBytes(of: &word) {
                raw.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: n)
            }
            offset += n
        }
    }
    return bytes
}
