#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SecProxyConfig
import SecProxyTLS
import SecProxyTestSupport
import XCTest

@testable import SecProxyCore

/// Accepts TCP connections and never answers (a backend stuck before its TLS handshake).
private final class SilentServer {
    let channel: Channel
    let accepted = NIOLockedValueBox(0)

    init(group: EventLoopGroup) throws {
        let accepted = self.accepted
        channel = try ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    var address: String { "127.0.0.1:\(channel.localAddress!.port!)" }
}

/// `BackendConnector` against real loopback sockets: attempt order, what counts against a backend's health,
/// and what does not (a client that left, local failures).
final class BackendConnectorTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!

    override func setUp() {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    override func tearDown() {
        try? group.syncShutdownGracefully()
    }

    private func runtime(backends: [String], extra: String = "", backendTLS: TLSClientContext? = nil) throws
        -> ListenerRuntime
    {
        let list = backends.map { "\"\($0)\"" }.joined(separator: ", ")
        let text = """
            [[listener]]
            name = "t"
            listen = "127.0.0.1:0"
            mode = "plain"
            backends = [\(list)]
            \(extra)
            [listener.health_check]
            interval = "1h"
            fall = 1
            rise = 1
            """
        let loaded = ConfigurationLoader.load(text: text, path: "t.toml", directory: "/")
        let configuration = try XCTUnwrap(loaded.configuration, "\(loaded.diagnostics)")
        return ListenerRuntime(
            configuration: configuration.listeners[0], tlsContext: nil, backendTLSContext: backendTLS
        )
    }

    /// Starts dialling on the loop; `then` runs on the test thread while it dials; returns the outcome.
    private func dial(
        _ runtime: ListenerRuntime, observer: RecordingObserver,
        then: ((NIOLoopBound<BackendConnector>, EventLoop) throws -> Void)? = nil
    ) throws -> BackendConnectOutcome {
        let loop = group.next()
        let promise = loop.makePromise(of: Void.self)
        let outcome = NIOLockedValueBox<BackendConnectOutcome?>(nil)
        let connector = try loop.submit {
            let connector = BackendConnector(runtime: runtime, eventLoop: loop, observer: observer)
            connector.start(pool: runtime.pool) { result in
                if case .connected(let channel, _, _) = result { channel.close(promise: nil) }
                outcome.withLockedValue { $0 = result }
                promise.succeed()
            }
            return NIOLoopBound(connector, eventLoop: loop)
        }.wait()
        try then?(connector, loop)
        try promise.futureResult.wait()
        return try XCTUnwrap(outcome.withLockedValue { $0 })
    }

    func testARefusedBackendCountsAgainstItAndTheNextOneIsTried() throws {
        let refusing = try RefusingPort()
        let echo = try EchoServer()
        defer { echo.stop() }
        let runtime = try runtime(backends: ["127.0.0.1:\(refusing.port)", echo.address], extra: #"balance = "round_robin""#)
        let observer = RecordingObserver()
        let outcome = try dial(runtime, observer: observer)
        guard case .connected(_, let target, let index) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(target.text, echo.address)
        XCTAssertEqual(index, 1)
        XCTAssertFalse(runtime.pool.health!.isUp(0), "the refusing backend is marked down (fall = 1)")
        XCTAssertTrue(runtime.pool.health!.isUp(1))
        XCTAssertEqual(observer.connectFailures, ["127.0.0.1:\(refusing.port)"])
    }

    func testEveryBackendRefusingIsBackendUnavailable() throws {
        let a = try RefusingPort()
        let b = try RefusingPort()
        let runtime = try runtime(backends: ["127.0.0.1:\(a.port)", "127.0.0.1:\(b.port)"])
        let observer = RecordingObserver()
        guard case .failed(let reason, let detail) = try dial(runtime, observer: observer) else { return XCTFail() }
        XCTAssertEqual(reason, .backendUnavailable)
        XCTAssertEqual(observer.connectFailures.count, 2, "each backend tried once")
        // The log line's error: the last attempt's, without NIO's stray parenthesis.
        let text = try XCTUnwrap(detail)
        XCTAssertTrue(text.hasSuffix("Connection refused (errno: \(ECONNREFUSED))"), text)
    }

    func testErrorTextOfAnIOErrorHasBalancedParentheses() {
        let error = IOError(errnoCode: ECONNREFUSED, reason: "connection reset (error set)")
        XCTAssertEqual(ErrorText.of(error), "connection reset (error set): Connection refused (errno: 111)")
        XCTAssertEqual(ErrorText.of(ChannelError.connectTimeout(.seconds(1))), "\(ChannelError.connectTimeout(.seconds(1)))")
    }

    func testABackendTLSHandshakeMustEndWithinTheConnectTimeout() throws {
        let silent = try SilentServer(group: group)
        defer { silent.channel.close(promise: nil) }
        let runtime = try runtime(
            backends: [silent.address], extra: #"connect_timeout = "300ms""#, backendTLS: try clientContext()
        )
        let observer = RecordingObserver()
        guard case .failed(let reason, _) = try dial(runtime, observer: observer) else { return XCTFail() }
        XCTAssertEqual(reason, .connectTimeout, "TCP connected, the TLS handshake did not end in time")
        XCTAssertFalse(runtime.pool.health!.isUp(0), "a stuck TLS handshake is the backend's failure")
    }

    func testAClientLeavingDuringTheBackendTLSHandshakeCountsNothingAgainstTheBackend() throws {
        let silent = try SilentServer(group: group)
        defer { silent.channel.close(promise: nil) }
        let runtime = try runtime(
            backends: [silent.address], extra: #"connect_timeout = "5s""#, backendTLS: try clientContext()
        )
        let observer = RecordingObserver()
        let outcome = try dial(runtime, observer: observer) { connector, loop in
            // The backend accepted the TCP connection; its TLS handshake waits: the client leaves now.
            try waitUntil(timeout: 10, "the backend accepted") { silent.accepted.withLockedValue { $0 } > 0 }
            try loop.submit { connector.value.cancel() }.wait()
        }
        guard case .cancelled = outcome else { return XCTFail("\(outcome)") }
        XCTAssertTrue(runtime.pool.health!.isUp(0), "the client left: not the backend's failure")
        XCTAssertEqual(observer.connectFailures, [])
    }

    func testLocalResourceFailuresAreNotTheBackendsFault() {
        for errno in [EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL] {
            XCTAssertTrue(BackendConnector.isLocal(IOError(errnoCode: errno, reason: "socket")), "\(errno)")
        }
        for errno in [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, ENOENT] {
            XCTAssertFalse(BackendConnector.isLocal(IOError(errnoCode: errno, reason: "connect")), "\(errno)")
        }
        XCTAssertFalse(BackendConnector.isLocal(ChannelError.connectTimeout(.seconds(1))))
        XCTAssertTrue(BackendConnector.isTimeout(ChannelError.connectTimeout(.seconds(1))))
        XCTAssertFalse(BackendConnector.isTimeout(IOError(errnoCode: ECONNREFUSED, reason: "connect")))
    }

    private func clientContext() throws -> TLSClientContext {
        var configuration = TLSClientConfiguration()
        configuration.verifyHostname = "localhost"
        return try TLSClientContext(configuration: configuration)
    }
}
