import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
import XCTest

@testable import SecProxyCore

/// `PerIPLimiter` (max_connections_per_ip, max_new_connections_per_ip) and `ConnectionTracker`
/// (max_connections, drain, adaptive handshake deadline), without channels or sockets.
final class PerIPLimiterTests: XCTestCase {
    // MARK: - Helpers

    private func key(_ ip: String, file: StaticString = #filePath, line: UInt = #line) throws -> PerIPLimiter.Key {
        let address = try SocketAddress(ipAddress: ip, port: 443)
        return try XCTUnwrap(PerIPLimiter.Key(address), "no key for \(ip)", file: file, line: line)
    }

    private let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    // MARK: - Keys

    func testIPv4KeysAreTheAddress() throws {
        XCTAssertEqual(try key("192.0.2.1"), .v4(0xC000_0201))
        XCTAssertEqual(try key("192.0.2.1"), try key("192.0.2.1"))
        XCTAssertNotEqual(try key("192.0.2.1"), try key("192.0.2.2"))
    }

    func testIPv6AddressesOfOneSlash64ShareAKey() throws {
        XCTAssertEqual(try key("2001:db8:1:2::1"), .v6Prefix(0x2001_0db8_0001_0002))
        XCTAssertEqual(try key("2001:db8:1:2::1"), try key("2001:db8:1:2:ffff:ffff:ffff:fffe"))
        XCTAssertNotEqual(try key("2001:db8:1:2::1"), try key("2001:db8:1:3::1"))
        XCTAssertNotEqual(try key("2001:db8:1:2::1"), try key("2001:db9:1:2::1"))
    }

    func testIPv4MappedIPv6CountsAsIPv4() throws {
        XCTAssertEqual(try key("::ffff:192.0.2.1"), try key("192.0.2.1"))
        XCTAssertNotEqual(try key("::ffff:192.0.2.1"), try key("::ffff:192.0.2.2"))
        // Not mapped: ::192.0.2.1 (IPv4-compatible) and 64:ff9b::/96 are ordinary IPv6.
        XCTAssertEqual(try key("::c000:201"), .v6Prefix(0))
    }

    func testUnixSocketClientsHaveNoKey() throws {
        let address = try SocketAddress(unixDomainSocketPath: "/tmp/secproxy-test.sock")
        XCTAssertNil(PerIPLimiter.Key(address))
    }

    func testIPv6SharingASlash64ShareTheConcurrentLimit() throws {
        let limiter = PerIPLimiter()
        let a = try key("2001:db8::1")
        let b = try key("2001:db8::2")
        let other = try key("2001:db8:0:1::1")
        XCTAssertEqual(limiter.admit(a, maxConcurrent: 1, maxPerSecond: 0, now: t0), .admitted)
        XCTAssertEqual(limiter.admit(b, maxConcurrent: 1, maxPerSecond: 0, now: t0), .overConcurrent)
        XCTAssertEqual(limiter.admit(other, maxConcurrent: 1, maxPerSecond: 0, now: t0), .admitted)
    }

    func testMappedAndPlainIPv4ShareTheConcurrentLimit() throws {
        let limiter = PerIPLimiter()
        XCTAssertEqual(limiter.admit(try key("198.51.100.7"), maxConcurrent: 1, maxPerSecond: 0, now: t0), .admitted)
        XCTAssertEqual(
            limiter.admit(try key("::ffff:198.51.100.7"), maxConcurrent: 1, maxPerSecond: 0, now: t0),
            .overConcurrent
        )
    }

    // MARK: - Concurrent limit

    func testConcurrentLimit() throws {
        let limiter = PerIPLimiter()
        let client = try key("203.0.113.5")
        for i in 0..<3 {
            XCTAssertEqual(limiter.admit(client, maxConcurrent: 3, maxPerSecond: 0, now: t0), .admitted, "#\(i)")
        }
        XCTAssertEqual(limiter.admit(client, maxConcurrent: 3, maxPerSecond: 0, now: t0), .overConcurrent)
        // A refused connection is not counted: still refused, and one release makes room for exactly one.
        XCTAssertEqual(limiter.admit(client, maxConcurrent: 3, maxPerSecond: 0, now: t0), .overConcurrent)
        limiter.release(client)
        XCTAssertEqual(limiter.admit(client, maxConcurrent: 3, maxPerSecond: 0, now: t0), .admitted)
        XCTAssertEqual(limiter.admit(client, maxConcurrent: 3, maxPerSecond: 0, now: t0), .overConcurrent)
        // Other clients are not affected.
        XCTAssertEqual(limiter.admit(try key("203.0.113.6"), maxConcurrent: 3, maxPerSecond: 0, now: t0), .admitted)
    }

    // MARK: - Rate limit

    func testRateLimitIsABucketOfOneSecond() throws {
        let limiter = PerIPLimiter()
        let client = try key("203.0.113.9")
        let n = 5
        func admit(at time: NIODeadline) -> PerIPLimiter.Decision {
            let decision = limiter.admit(client, maxConcurrent: 0, maxPerSecond: n, now: time)
            if decision == .admitted { limiter.release(client) }  // the rate does not depend on open ones
            return decision
        }
        for i in 0..<n {
            XCTAssertEqual(admit(at: t0), .admitted, "#\(i) at t0")
        }
        XCTAssertEqual(admit(at: t0), .overRate)

        // 1/n s later: exactly one more token.
        let oneToken = t0 + .nanoseconds(1_000_000_000 / Int64(n))
        XCTAssertEqual(admit(at: oneToken), .admitted)
        XCTAssertEqual(admit(at: oneToken), .overRate)

        // A refused attempt does not cost a token: another 1/n s gives one again.
        let twoTokens = oneToken + .nanoseconds(1_000_000_000 / Int64(n))
        XCTAssertEqual(admit(at: twoTokens), .admitted)
        XCTAssertEqual(admit(at: twoTokens), .overRate)

        // One second after the last admission the bucket is full again, and holds no more than n.
        let full = twoTokens + .seconds(1)
        for i in 0..<n {
            XCTAssertEqual(admit(at: full), .admitted, "#\(i) after 1 s")
        }
        XCTAssertEqual(admit(at: full), .overRate)

        // A long pause does not let the bucket grow beyond one second's worth.
        let later = full + .seconds(60)
        for i in 0..<n {
            XCTAssertEqual(admit(at: later), .admitted, "#\(i) after 60 s")
        }
        XCTAssertEqual(admit(at: later), .overRate)
    }

    func testRateLimitIsPerClient() throws {
        let limiter = PerIPLimiter()
        let a = try key("203.0.113.10")
        let b = try key("203.0.113.11")
        XCTAssertEqual(limiter.admit(a, maxConcurrent: 0, maxPerSecond: 1, now: t0), .admitted)
        XCTAssertEqual(limiter.admit(a, maxConcurrent: 0, maxPerSecond: 1, now: t0), .overRate)
        XCTAssertEqual(limiter.admit(b, maxConcurrent: 0, maxPerSecond: 1, now: t0), .admitted)
    }

    func testBothLimitsTogether() throws {
        let limiter = PerIPLimiter()
        let client = try key("203.0.113.12")
        XCTAssertEqual(limiter.admit(client, maxConcurrent: 1, maxPerSecond: 2, now: t0), .admitted)
        // Over the concurrent limit; that refusal must not spend a token.
        XCTAssertEqual(limiter.admit(client, maxConcurrent: 1, maxPerSecond: 2, now: t0), .overConcurrent)
        limiter.release(client)
        XCTAssertEqual(limiter.admit(client, maxConcurrent: 1, maxPerSecond: 2, now: t0), .admitted)
        limiter.release(client)
        XCTAssertEqual(limiter.admit(client, maxConcurrent: 1, maxPerSecond: 2, now: t0), .overRate)
    }

    func testBothLimitsZeroAlwaysAdmits() throws {
        let limiter = PerIPLimiter()
        let client = try key("203.0.113.13")
        for _ in 0..<10_000 {
            XCTAssertEqual(limiter.admit(client, maxConcurrent: 0, maxPerSecond: 0, now: t0), .admitted)
        }
        XCTAssertEqual(limiter.trackedClients, 0, "unlimited clients need no entry")
    }

    // MARK: - Bounded table

    /// 100 000 distinct clients, each opening and closing one connection, 1 ms apart.
    private func floodOfDistinctClients(maxConcurrent: Int, maxPerSecond: Int) -> (peak: Int, end: Int) {
        let limiter = PerIPLimiter()
        var peak = 0
        var now = t0
        for i in 0..<100_000 {
            let client = PerIPLimiter.Key.v4(0x0A00_0000 + UInt32(i))
            let decision = limiter.admit(client, maxConcurrent: maxConcurrent, maxPerSecond: maxPerSecond, now: now)
            XCTAssertEqual(decision, .admitted, "client #\(i)")
            limiter.release(client)
            peak = max(peak, limiter.trackedClients)
            now = now + .milliseconds(1)
        }
        return (peak, limiter.trackedClients)
    }

    func testTableStaysBoundedWithARateLimit() {
        // One second of accepts at 1 ms apart is ~1000 live buckets; the table may hold about twice that.
        let (peak, end) = floodOfDistinctClients(maxConcurrent: 0, maxPerSecond: 1)
        XCTAssertLessThanOrEqual(peak, 4_096, "peak \(peak)")
        XCTAssertLessThanOrEqual(end, 4_096, "end \(end)")
    }

    func testTableStaysBoundedWithOnlyAConcurrentLimit() {
        let (peak, end) = floodOfDistinctClients(maxConcurrent: 1, maxPerSecond: 0)
        XCTAssertLessThanOrEqual(peak, 2_048, "peak \(peak)")
        XCTAssertLessThanOrEqual(end, 2_048, "end \(end)")
    }

    func testTableStaysBoundedWithBothLimits() {
        let (peak, end) = floodOfDistinctClients(maxConcurrent: 2, maxPerSecond: 10)
        XCTAssertLessThanOrEqual(peak, 4_096, "peak \(peak)")
        XCTAssertLessThanOrEqual(end, 4_096, "end \(end)")
    }

    func testOpenClientsSurviveASweep() throws {
        let limiter = PerIPLimiter()
        let held = try key("192.0.2.200")
        XCTAssertEqual(limiter.admit(held, maxConcurrent: 1, maxPerSecond: 0, now: t0), .admitted)
        // Enough distinct clients to force sweeps.
        for i in 0..<5_000 {
            let client = PerIPLimiter.Key.v4(0x0A00_0000 + UInt32(i))
            XCTAssertEqual(limiter.admit(client, maxConcurrent: 1, maxPerSecond: 0, now: t0), .admitted)
            limiter.release(client)
        }
        XCTAssertEqual(limiter.admit(held, maxConcurrent: 1, maxPerSecond: 0, now: t0), .overConcurrent)
        limiter.release(held)
        XCTAssertEqual(limiter.admit(held, maxConcurrent: 1, maxPerSecond: 0, now: t0), .admitted)
    }

    // MARK: - ConnectionTracker

    /// Client channels as the tracker sees them; each records the shutdown events it receives.
    private func channels(_ count: Int) -> [(channel: EmbeddedChannel, recorder: ShutdownRecorder)] {
        (0..<count).map { _ in
            let recorder = ShutdownRecorder()
            return (EmbeddedChannel(handler: recorder), recorder)
        }
    }

    func testTrackerAdmitsUpToMax() throws {
        let tracker = ConnectionTracker(maxConnections: 3)
        let h = channels(5).map(\.channel)
        XCTAssertTrue(tracker.admit(h[0]))
        XCTAssertTrue(tracker.admit(h[1]))
        XCTAssertTrue(tracker.admit(h[2]))
        XCTAssertEqual(tracker.count, 3)
        XCTAssertFalse(tracker.admit(h[3]))
        XCTAssertEqual(tracker.count, 3)
        tracker.remove(ObjectIdentifier(h[1]))
        XCTAssertEqual(tracker.count, 2)
        XCTAssertTrue(tracker.admit(h[3]))
        XCTAssertEqual(tracker.count, 3)
        // Removing twice (or a channel never admitted) does not free a second slot.
        tracker.remove(ObjectIdentifier(h[1]))
        XCTAssertEqual(tracker.count, 3)
        XCTAssertFalse(tracker.admit(h[4]))
    }

    func testTrackerLimitChangesOnReload() throws {
        let tracker = ConnectionTracker(maxConnections: 1)
        let h = channels(4).map(\.channel)
        XCTAssertTrue(tracker.admit(h[0]))
        XCTAssertFalse(tracker.admit(h[1]))
        tracker.setMaxConnections(2)
        XCTAssertTrue(tracker.admit(h[1]))
        XCTAssertFalse(tracker.admit(h[2]))
        tracker.setMaxConnections(1)
        XCTAssertFalse(tracker.admit(h[3]), "a lower limit refuses new ones; open ones stay")
        XCTAssertEqual(tracker.count, 2)
    }

    func testWaitUntilEmptyCompletesWhenTheLastConnectionIsRemoved() throws {
        let loop = EmbeddedEventLoop()
        let tracker = ConnectionTracker(maxConnections: 10)
        let h = channels(2).map(\.channel)
        XCTAssertTrue(tracker.admit(h[0]))
        XCTAssertTrue(tracker.admit(h[1]))
        var drained = false
        tracker.waitUntilEmpty(on: loop).assumeIsolated().whenSuccess { drained = true }
        loop.run()
        XCTAssertFalse(drained)
        tracker.remove(ObjectIdentifier(h[0]))
        loop.run()
        XCTAssertFalse(drained, "one connection is still open")
        tracker.remove(ObjectIdentifier(h[1]))
        loop.run()
        XCTAssertTrue(drained)
        // A second drain after that completes at once.
        var again = false
        tracker.waitUntilEmpty(on: loop).assumeIsolated().whenSuccess { again = true }
        XCTAssertTrue(again)
    }

    func testWaitUntilEmptyCompletesAtOnceWhenEmpty() throws {
        let loop = EmbeddedEventLoop()
        let tracker = ConnectionTracker(maxConnections: 10)
        var drained = false
        tracker.waitUntilEmpty(on: loop).assumeIsolated().whenSuccess { drained = true }
        XCTAssertTrue(drained)
    }

    func testCloseAllSendsTheShutdownEventToEveryOpenConnection() throws {
        let tracker = ConnectionTracker(maxConnections: 10)
        let h = channels(3)
        for entry in h { XCTAssertTrue(tracker.admit(entry.channel)) }
        tracker.remove(ObjectIdentifier(h[2].channel))
        tracker.closeAll()
        for entry in h { entry.channel.embeddedEventLoop.run() }
        XCTAssertEqual(h.map(\.recorder.shutdowns), [1, 1, 0])
    }

    func testHandshakeDeadlineIsShortenedUnderPressureAndRestored() throws {
        let tracker = ConnectionTracker(maxConnections: 8)  // threshold: 8 / 4 = 2
        XCTAssertEqual(tracker.handshakePressureThreshold, 2)
        let full = TimeAmount.seconds(10)
        let quarter = TimeAmount.milliseconds(2_500)

        // At or below the threshold: the full timeout.
        XCTAssertEqual(tracker.handshakeStarted(timeout: full), full)
        XCTAssertEqual(tracker.handshakeStarted(timeout: full), full)
        // Above it: a quarter, never more than the timeout.
        XCTAssertEqual(tracker.handshakeStarted(timeout: full), quarter)
        XCTAssertEqual(tracker.handshakeStarted(timeout: full), quarter)
        XCTAssertEqual(tracker.handshakesInProgress, 4)

        // Falling to the threshold is not enough (hysteresis): still shortened.
        tracker.handshakeEnded()
        tracker.handshakeEnded()
        XCTAssertEqual(tracker.handshakesInProgress, 2)
        XCTAssertEqual(tracker.handshakeStarted(timeout: full), quarter)  // 3 in progress
        tracker.handshakeEnded()  // 2
        // Down to half the threshold (1): the full timeout again.
        tracker.handshakeEnded()  // 1
        XCTAssertEqual(tracker.handshakesInProgress, 1)
        XCTAssertEqual(tracker.handshakeStarted(timeout: full), full)  // 2 in progress, not above 2
        tracker.handshakeEnded()
        tracker.handshakeEnded()
        XCTAssertEqual(tracker.handshakesInProgress, 0)
    }

    func testPressureObserverIsToldOnceEachWay() throws {
        let events = Mutex<[String]>([])
        let tracker = ConnectionTracker(maxConnections: 4) { shortened, count in  // threshold 1
            events.withLock { $0.append("\(shortened):\(count)") }
        }
        let timeout = TimeAmount.seconds(8)
        XCTAssertEqual(tracker.handshakeStarted(timeout: timeout), timeout)
        XCTAssertEqual(tracker.handshakeStarted(timeout: timeout), .seconds(2))
        XCTAssertEqual(tracker.handshakeStarted(timeout: timeout), .seconds(2))
        tracker.handshakeEnded()
        tracker.handshakeEnded()
        tracker.handshakeEnded()
        XCTAssertEqual(tracker.handshakeStarted(timeout: timeout), timeout)
        tracker.handshakeEnded()
        XCTAssertEqual(events.withLock { $0 }, ["true:2", "false:0"])
    }
}

/// Counts the `ConnectionShutdownEvent`s that reach it.
final class ShutdownRecorder: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    private(set) var shutdowns = 0

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ConnectionShutdownEvent { shutdowns += 1 }
        context.fireUserInboundEventTriggered(event)
    }
}
