import Foundation
import NIOCore
import NIOPosix
import SecProxyTestSupport
import XCTest

/// `[listener.health_check]` seen from outside (SPEC §2, §3 "Forwarding"/"Balancing"): a backend that fails its
/// checks is logged `backend down` and no longer dialled while another one is up; it comes back (`backend up`)
/// and gets its share again; when every backend is down they are still tried; without the table (or once a
/// reload removed it) nothing is marked down.
final class HealthCheckEndToEndTests: ProxyTestCase {
    private var portServers: [PortEchoServer] = []

    override func tearDown() {
        super.tearDown()
        for server in portServers { server.stop() }
        portServers = []
    }

    // MARK: - World building

    /// `[listener.health_check]` as raw TOML for `ProxyConfig.Listener.extraTOML`.
    private static func healthCheckTOML(
        interval: String = "100ms", timeout: String = "1s", fall: Int = 2, rise: Int = 1
    ) -> String {
        """
        [listener.health_check]
        interval = "\(interval)"
        timeout = "\(timeout)"
        fall = \(fall)
        rise = \(rise)
        """
    }

    /// A plain round-robin listener over `backends`, with a health check unless `healthCheck` is nil.
    private func listener(
        _ backends: [String], healthCheck: String? = HealthCheckEndToEndTests.healthCheckTOML()
    ) -> ProxyConfig.Listener {
        var listener = ProxyConfig.Listener.plain("raw", backends: backends, settings: ["balance": "round_robin"])
        listener.extraTOML = healthCheck ?? ""
        return listener
    }

    /// Debug logging, so that each failed backend connect made for a client is logged.
    private static let debugServer: [String: TOMLValue] = ["log_level": "debug"]

    /// An echo server bound to exactly `port` on 127.0.0.1 (stopped in tearDown).
    private func echoServer(onPort port: Int) throws -> PortEchoServer {
        // The freed port may briefly serve as some other connection's ephemeral source port: retry to a deadline.
        var server: PortEchoServer?
        try waitUntil(timeout: 5, "binding 127.0.0.1:\(port) again") {
            server = try? PortEchoServer(port: port)
            return server != nil
        }
        guard let server else { throw SubprocessError("could not bind 127.0.0.1:\(port)") }
        portServers.append(server)
        return server
    }

    // MARK: - Log helpers

    private func isHealthLine(_ fields: [String: String], _ message: String, backend: String? = nil) -> Bool {
        fields["msg"] == message && fields["listener"] == "raw" && (backend == nil || fields["backend"] == backend)
    }

    /// Index (in the raw stderr lines) of the first line satisfying `predicate`.
    private func lineIndex(_ proxy: ProxyProcess, where predicate: ([String: String]) -> Bool) -> Int? {
        proxy.process.stderrLines.firstIndex { predicate(ProxyProcess.parseLogLine($0)) }
    }

    /// Parsed lines from `index` on.
    private func events(_ proxy: ProxyProcess, from index: Int) -> [[String: String]] {
        Array(proxy.process.stderrLines.dropFirst(index)).map(ProxyProcess.parseLogLine)
    }

    /// Runs one echo transfer through the proxy and returns the backend its connection line names.
    private func transferBackend(_ proxy: ProxyProcess, _ address: ListenerAddress, _ text: String) throws -> String {
        let result = try python.transfer(.plain(address), payload: .text(text), timeout: 10)
        XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
        XCTAssertEqual(result.receivedText, text)
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["reason"], "client_closed", "\(fields)")
        return fields["backend"] ?? ""
    }

    /// Checks that no `backend down` line for listener `raw` appears from `index` on during a bounded, polled
    /// window (at least `window` seconds, i.e. many check intervals), failing as soon as one shows up.
    private func assertNoBackendDown(
        _ proxy: ProxyProcess, from index: Int, window: TimeInterval, file: StaticString = #filePath,
        line: UInt = #line
    ) {
        let deadline = Deadline(seconds: window)
        var offending: [String: String]?
        try? waitUntil(timeout: window + 1, pollInterval: 0.02, "window end") {
            offending = events(proxy, from: index).first { isHealthLine($0, "backend down") }
            return offending != nil || deadline.hasPassed
        }
        XCTAssertNil(offending, "unexpected backend down line:\n\(proxy.outputTail(60))", file: file, line: line)
    }

    // MARK: - Tests

    func testDownBackendIsNoLongerDialled() throws {
        let dead = try RefusingPort()
        let live = try echoBackend()
        let (proxy, address) = try startProxy(listener([dead.address, live.address]), server: Self.debugServer)

        let down = try proxy.waitForLogs(count: 1, timeout: 10, "backend down for \(dead.address)") {
            self.isHealthLine($0, "backend down", backend: dead.address)
        }[0]
        XCTAssertEqual(down["level"], "warning", "\(down)")
        let downIndex = try XCTUnwrap(lineIndex(proxy) { self.isHealthLine($0, "backend down", backend: dead.address) })

        var backends: [String] = []
        for index in 0..<6 {
            backends.append(try transferBackend(proxy, address, "hc\(index)"))
        }
        XCTAssertEqual(backends, Array(repeating: live.address, count: 6), proxy.outputTail(60))

        let after = events(proxy, from: downIndex)
        let dialled = after.filter { $0["msg"] == "backend connect failed" }
        XCTAssertEqual(dialled, [], "the down backend was dialled after its down line:\n\(proxy.outputTail(80))")
        XCTAssertFalse(after.contains { isHealthLine($0, "backend down", backend: live.address) })
        XCTAssertFalse(after.contains { isHealthLine($0, "backend up") }, proxy.outputTail(60))
    }

    func testRecoveredBackendIsUpAndGetsItsShareAgain() throws {
        let reserved = try RefusingPort()
        let deadAddress = reserved.address
        let live = try echoBackend()
        let (proxy, address) = try startProxy(listener([deadAddress, live.address]), server: Self.debugServer)

        try proxy.waitForLogs(count: 1, timeout: 10, "backend down for \(deadAddress)") {
            self.isHealthLine($0, "backend down", backend: deadAddress)
        }
        // The backend comes back on that very port.
        reserved.release()
        _ = try echoServer(onPort: reserved.port)

        let up = try proxy.waitForLogs(count: 1, timeout: 10, "backend up for \(deadAddress)") {
            self.isHealthLine($0, "backend up", backend: deadAddress)
        }[0]
        XCTAssertEqual(up["level"], "notice", "\(up)")
        let upIndex = try XCTUnwrap(lineIndex(proxy) { self.isHealthLine($0, "backend up", backend: deadAddress) })

        var backends: [String] = []
        for index in 0..<6 {
            backends.append(try transferBackend(proxy, address, "back\(index)"))
        }
        let shares = [deadAddress, live.address].map { backend in backends.filter { $0 == backend }.count }
        XCTAssertEqual(shares.reduce(0, +), 6, "\(backends)")
        XCTAssertLessThanOrEqual(abs(shares[0] - shares[1]), 1, "shares \(shares): \(backends)")
        XCTAssertFalse(
            events(proxy, from: upIndex).contains { $0["msg"] == "backend connect failed" }, proxy.outputTail(60)
        )
    }

    func testAllBackendsDownAreStillTriedAsALastResort() throws {
        let dead1 = try RefusingPort()
        let dead2 = try RefusingPort()
        let (proxy, address) = try startProxy(listener([dead1.address, dead2.address]), server: Self.debugServer)

        for dead in [dead1, dead2] {
            try proxy.waitForLogs(count: 1, timeout: 10, "backend down for \(dead.address)") {
                self.isHealthLine($0, "backend down", backend: dead.address)
            }
        }
        let start = proxy.process.stderrLines.count

        let result = try python.transfer(.plain(address), payload: .text("anyone?"), after: .waitForEOF, timeout: 10)
        XCTAssertNotNil(result.eof, "the client must be closed: \(result)")
        XCTAssertEqual(result.bytesReceived, 0)
        let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: try XCTUnwrap(result.localPort)))
        XCTAssertEqual(fields["reason"], "backend_unavailable", "\(fields)")
        XCTAssertEqual(fields["bytes_out"], "0")

        // Both were dialled for that client, although down.
        let dialled = Set(events(proxy, from: start).filter { $0["msg"] == "backend connect failed" }.compactMap {
            $0["backend"]
        })
        XCTAssertEqual(dialled, [dead1.address, dead2.address], proxy.outputTail(60))
    }

    func testWithoutHealthCheckNothingIsMarkedDownAndFailoverIsUnchanged() throws {
        let dead = try RefusingPort()
        let live = try echoBackend()
        let (proxy, address) = try startProxy(
            listener([dead.address, live.address], healthCheck: nil), server: Self.debugServer
        )
        for index in 0..<6 {
            XCTAssertEqual(try transferBackend(proxy, address, "plain\(index)"), live.address)
        }
        // Round robin still starts on the dead backend for half of them, and fails over past it each time.
        let dialled = proxy.events.filter { $0["msg"] == "backend connect failed" }
        XCTAssertFalse(dialled.isEmpty, proxy.outputTail(60))
        XCTAssertTrue(dialled.allSatisfy { $0["backend"] == dead.address }, "\(dialled)")
        let health = proxy.events.filter { $0["msg"] == "backend down" || $0["msg"] == "backend up" }
        XCTAssertEqual(health, [], proxy.outputTail(60))
        XCTAssertEqual(live.connectionCount, 6, "no check connections without [listener.health_check]")
    }

    func testReloadWithoutHealthCheckStopsMarkingBackendsDown() throws {
        let dead = try RefusingPort()
        let live = try echoBackend()
        let proxy = try startProxy(
            ProxyConfig(server: Self.debugServer, listeners: [listener([dead.address, live.address])])
        )
        let address = try proxy.address(of: "raw")
        try proxy.waitForLogs(count: 1, timeout: 10, "backend down for \(dead.address)") {
            self.isHealthLine($0, "backend down", backend: dead.address)
        }

        // Same listener, no [listener.health_check].
        try ProxyConfig(
            server: Self.debugServer, listeners: [listener([dead.address, live.address], healthCheck: nil)]
        ).write(to: temporary)
        let start = proxy.process.stderrLines.count
        proxy.send(signal: SIGHUP)
        try waitUntil(timeout: 10, "configuration reloaded", state: { proxy.outputTail() }) {
            self.events(proxy, from: start).contains { $0["msg"] == "configuration reloaded" }
        }
        let reloaded = try XCTUnwrap(
            lineIndex(proxy) { $0["msg"] == "configuration reloaded" }
        )

        // Clients work and fail over as without health checks: the dead backend is dialled again.
        for index in 0..<4 {
            XCTAssertEqual(try transferBackend(proxy, address, "reload\(index)"), live.address)
        }
        XCTAssertTrue(
            events(proxy, from: reloaded).contains {
                $0["msg"] == "backend connect failed" && $0["backend"] == dead.address
            },
            proxy.outputTail(60)
        )
        // Ten check intervals of the old config: a checker still running on the new pool (all up again) would
        // have logged a new `backend down` (fall = 2) well within this.
        assertNoBackendDown(proxy, from: reloaded, window: 1.0)
    }

    /// Control for the test above: a reload that keeps the table starts checks on the new pool, whose backends
    /// start up, so the dead one is marked down again — the absence above is meaningful.
    func testReloadKeepingHealthCheckMarksTheDeadBackendDownAgain() throws {
        let dead = try RefusingPort()
        let live = try echoBackend()
        let config = ProxyConfig(server: Self.debugServer, listeners: [listener([dead.address, live.address])])
        let proxy = try startProxy(config)
        try proxy.waitForLogs(count: 1, timeout: 10, "backend down for \(dead.address)") {
            self.isHealthLine($0, "backend down", backend: dead.address)
        }
        try config.write(to: temporary)
        let start = proxy.process.stderrLines.count
        proxy.send(signal: SIGHUP)
        try waitUntil(timeout: 10, "a new backend down after the reload", state: { proxy.outputTail(60) }) {
            let after = self.events(proxy, from: start)
            guard let reloaded = after.firstIndex(where: { $0["msg"] == "configuration reloaded" }) else {
                return false
            }
            return after[reloaded...].contains { self.isHealthLine($0, "backend down", backend: dead.address) }
        }
        XCTAssertEqual(
            proxy.events.filter { isHealthLine($0, "backend down", backend: live.address) }.count, 0,
            proxy.outputTail(60)
        )
    }
}

// MARK: - An echo server on a chosen port

/// A minimal echo server bound to a given 127.0.0.1 port (the helpers' `EchoServer` always takes a free one).
final class PortEchoServer: @unchecked Sendable {
    private let channel: Channel

    init(port: Int) throws {
        let box = ChildBox()
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { child in
                box.add(child)
                return child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(PortEchoHandler())
                }
            }
            .bind(host: "127.0.0.1", port: port).wait()
        self.box = box
    }

    private let box: ChildBox

    func stop() {
        try? channel.close().wait()
        for child in box.all() { try? child.close().wait() }
    }
}

private final class ChildBox: @unchecked Sendable {
    private let lock = NSLock()
    private var channels: [Channel] = []
    func add(_ channel: Channel) { lock.withLock { channels.append(channel) } }
    func all() -> [Channel] { lock.withLock { channels } }
}

private final class PortEchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolated()
                .whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
