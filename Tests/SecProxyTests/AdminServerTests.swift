import Foundation
import NIOCore
import NIOPosix
import SecProxyConfig
import SecProxyTestSupport
import XCTest

@testable import SecProxy

/// The admin endpoint on a real loopback socket, with real HTTP clients (curl, raw sockets): routes, methods,
/// and the bounds a client cannot get past (head size, body, read deadline, connection count).
final class AdminServerTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!
    private var metrics: ProxyMetrics!
    private var health: HealthState!
    private var server: AdminServer?

    override func setUp() {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        metrics = ProxyMetrics()
        health = HealthState()
    }

    override func tearDown() async throws {
        await server?.close()
        try await group.shutdownGracefully()
    }

    private func start(_ limits: AdminServer.Limits = AdminServer.Limits()) async throws -> Int {
        let started = try await AdminServer.start(
            listen: SocketAddressSpec(host: "127.0.0.1", port: 0, text: "127.0.0.1:0"),
            endpoint: AdminEndpoint(metrics: metrics, health: health), group: group, limits: limits
        )
        server = started
        return try XCTUnwrap(started.localAddress?.port)
    }

    func testMetricsAndHealthz() async throws {
        let port = try await start()
        let reply = try curl(port, "/metrics")
        XCTAssertEqual(reply.status, 200, "\(reply)")
        XCTAssertEqual(reply.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        let scrape = try PrometheusScrape(reply.body)
        XCTAssertEqual(scrape.value("secproxy_build_info", ["version": SecProxyVersion.string]), 1)
        XCTAssertEqual(Int(reply.headers["content-length"] ?? ""), reply.body.utf8.count)
        // A query string does not change the route.
        XCTAssertEqual(try curl(port, "/metrics?name=x").status, 200)

        // /healthz through the phases.
        var healthz = try curl(port, "/healthz")
        XCTAssertEqual(healthz.status, 503)
        XCTAssertEqual(healthz.body, "starting\n")
        health.started()
        healthz = try curl(port, "/healthz")
        XCTAssertEqual(healthz.status, 200)
        XCTAssertEqual(healthz.body, "ok\n")
        health.draining()
        healthz = try curl(port, "/healthz")
        XCTAssertEqual(healthz.status, 503)
        XCTAssertEqual(healthz.body, "draining\n")
    }

    func testOtherPathsAndMethods() async throws {
        let port = try await start()
        let missing = try curl(port, "/")
        XCTAssertEqual(missing.status, 404, "\(missing)")
        XCTAssertEqual(try curl(port, "/metricsx").status, 404)
        XCTAssertEqual(try curl(port, "/metrics/").status, 404)
        for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
            let reply = try curl(port, "/metrics", method: method)
            XCTAssertEqual(reply.status, 405, "\(method): \(reply)")
            XCTAssertEqual(reply.headers["allow"], "GET, HEAD", method)
        }
        XCTAssertEqual(try curl(port, "/healthz", method: "DELETE").status, 405)
        let head = try curl(port, "/metrics", method: "HEAD")
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.body, "", "HEAD has no body")
        XCTAssertGreaterThan(Int(head.headers["content-length"] ?? "") ?? 0, 100)
    }

    func testKeepAliveServesSeveralRequestsOnOneConnection() async throws {
        let port = try await start()
        let client = try RawClient(port: port)
        try client.send(
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                + "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        let (text, closed) = client.readUntilClosed(timeout: 10)
        XCTAssertTrue(closed, text)
        let statuses = text.replacingOccurrences(of: "\r\n", with: "\n").components(separatedBy: "\n")
            .filter { $0.hasPrefix("HTTP/1.1 ") }
        XCTAssertEqual(statuses, ["HTTP/1.1 503 Service Unavailable", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK"], text)
    }

    func testOversizedHeadIsRefusedWith431() async throws {
        var limits = AdminServer.Limits()
        limits.maxHeadBytes = 1024
        let port = try await start(limits)
        // Just under the limit is served.
        let fits = try RawClient(port: port)
        try fits.send("GET /healthz HTTP/1.1\r\nX-Pad: \(String(repeating: "a", count: 900))\r\nConnection: close\r\n\r\n")
        XCTAssertTrue(fits.readUntilClosed(timeout: 10).text.hasPrefix("HTTP/1.1 503 "))
        // Over it: 431 and closed, even though the head never ends.
        let client = try RawClient(port: port)
        try client.send("GET /metrics HTTP/1.1\r\nX-Pad: \(String(repeating: "a", count: 2000))")
        let (text, closed) = client.readUntilClosed(timeout: 10)
        XCTAssertTrue(closed, text)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"), text)
    }

    func testRequestWithABodyIsRefusedWith413() async throws {
        let port = try await start()
        let client = try RawClient(port: port)
        try client.send("GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        let (text, closed) = client.readUntilClosed(timeout: 10)
        XCTAssertTrue(closed, text)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 413 Payload Too Large\r\n"), text)
        let chunked = try RawClient(port: port)
        try chunked.send("POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        XCTAssertTrue(chunked.readUntilClosed(timeout: 10).text.hasPrefix("HTTP/1.1 413 "))
    }

    func testGarbageIsAnswered400() async throws {
        let port = try await start()
        let client = try RawClient(port: port)
        try client.send("\u{1}\u{2}\u{3} not http\r\n\r\n")
        let (text, closed) = client.readUntilClosed(timeout: 10)
        XCTAssertTrue(closed, text)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 400 Bad Request"), text)
    }

    /// Slowloris on the admin port: the head must be complete within `readTimeout` of the accept; bytes
    /// trickling in do not extend it, a silent client is closed too, and so is an idle kept-alive one.
    func testSlowAndSilentClientsAreCutAtTheReadDeadline() async throws {
        var limits = AdminServer.Limits()
        limits.readTimeout = .milliseconds(600)
        let port = try await start(limits)

        let silent = try RawClient(port: port)
        let silentStart = ContinuousClock.now
        let (silentText, silentClosed) = silent.readUntilClosed(timeout: 5)
        let silentAfter = ContinuousClock.now - silentStart
        XCTAssertTrue(silentClosed, silentText)
        XCTAssertTrue(silentText.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), silentText)
        XCTAssertGreaterThanOrEqual(silentAfter, .milliseconds(550))
        XCTAssertLessThan(silentAfter, .seconds(3))

        // One byte every 100 ms: still cut at ~600 ms from the accept, not 600 ms after the last byte.
        let trickle = try RawClient(port: port)
        let trickleStart = ContinuousClock.now
        var sent = 0
        for byte in Array("GET /metrics HTTP/1.1\r\nHost: localhost\r\n".utf8) {
            guard (try? trickle.send([byte])) != nil else { break }
            sent += 1
            if ContinuousClock.now - trickleStart > .seconds(3) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let (trickleText, trickleClosed) = trickle.readUntilClosed(timeout: 5)
        let trickleAfter = ContinuousClock.now - trickleStart
        XCTAssertTrue(trickleClosed, trickleText)
        XCTAssertTrue(trickleText.hasPrefix("HTTP/1.1 408 "), trickleText)
        XCTAssertLessThan(sent, 15, "the connection should have been cut after ~6 bytes, \(sent) were accepted")
        XCTAssertLessThan(trickleAfter, .seconds(3))

        // A kept-alive connection that goes quiet after its response is closed by the same deadline.
        let idle = try RawClient(port: port)
        try idle.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        let (idleText, idleClosed) = idle.readUntilClosed(timeout: 5)
        XCTAssertTrue(idleClosed, idleText)
        XCTAssertTrue(idleText.hasPrefix("HTTP/1.1 503 "), idleText)
        XCTAssertTrue(idleText.contains("HTTP/1.1 408 "), idleText)
    }

    func testConnectionsOverTheLimitAreClosedAtOnce() async throws {
        var limits = AdminServer.Limits()
        limits.maxConnections = 2
        limits.readTimeout = .seconds(30)
        let port = try await start(limits)
        let first = try RawClient(port: port)
        let second = try RawClient(port: port)
        try await eventually(5, "two admin connections open") { server?.openConnections == 2 }
        let third = try RawClient(port: port)
        let (text, closed) = third.readUntilClosed(timeout: 5)
        XCTAssertTrue(closed, "a third connection must be closed at once")
        XCTAssertEqual(text, "")
        // The two held ones still get answers.
        for client in [first, second] {
            try client.send("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            XCTAssertTrue(client.readUntilClosed(timeout: 5).text.hasPrefix("HTTP/1.1 503 "))
        }
        // Once they are gone a new one is served.
        try await eventually(5, "the admin connections closed") { server?.openConnections == 0 }
        XCTAssertEqual(try curl(port, "/healthz").status, 503)
    }
}

/// `/healthz`'s state on its own.
final class HealthStateTests: XCTestCase {
    func testPhasesAndProblems() {
        let health = HealthState()
        XCTAssertEqual(health.report(), HealthState.Report(healthy: false, reason: "starting"))
        health.started()
        XCTAssertEqual(health.report(), HealthState.Report(healthy: true, reason: "ok"))
        health.setUnbound(["extra": "bind 127.0.0.1:1: Permission denied", "a": "x"])
        XCTAssertEqual(
            health.report(),
            HealthState.Report(
                healthy: false,
                reason: "listener 'a' is not bound: x; listener 'extra' is not bound: bind 127.0.0.1:1: Permission denied"
            )
        )
        health.setUnbound([:])
        let now = NIODeadline.now()
        health.acceptFailed(listener: "web", reason: "Too many open files", now: now)
        XCTAssertEqual(
            health.report(now: now + .milliseconds(100)),
            HealthState.Report(healthy: false, reason: "listener 'web' is not accepting: Too many open files")
        )
        XCTAssertEqual(health.report(now: now + HealthState.acceptFailureWindow + .milliseconds(1)).reason, "ok")
        health.started()
        health.draining()
        XCTAssertEqual(health.report(), HealthState.Report(healthy: false, reason: "draining"))
        // Draining is final.
        health.started()
        XCTAssertEqual(health.phase, .draining)
    }
}
