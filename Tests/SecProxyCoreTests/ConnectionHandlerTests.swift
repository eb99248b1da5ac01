import NIOCore
import NIOEmbedded
import XCTest

@testable import SecProxyCore

/// The glue pair, admission and connection driver on `EmbeddedChannel`s with simulated sockets: every close
/// ordering with queued writes present or not, asserting exactly what each side received and when it closed.
final class ConnectionHandlerTests: XCTestCase {
    private func bytes(_ count: Int, _ seed: UInt8) -> ByteBuffer { .pattern(count, seed: seed) }

    func testBytesBothWaysThenFINsBothWaysEndWithOneLine() throws {
        let world = try ConnectionHarness()
        let client = try world.connect()
        XCTAssertTrue(client.connector.started, "plain: dialled at accept")
        client.socket.peerSends(bytes(1000, 1))
        world.settle()
        XCTAssertEqual(client.backend.taken, bytes(1000, 1))
        client.backend.peerSends(bytes(2000, 2))
        world.settle()
        XCTAssertEqual(client.socket.taken, bytes(2000, 2))

        client.socket.peerSendsFIN()
        world.settle()
        XCTAssertTrue(client.backend.finSent, "the client's FIN is passed on")
        XCTAssertFalse(client.socket.finSent)
        client.backend.peerSends(bytes(500, 3))
        client.backend.peerSendsFIN()
        world.settle()
        XCTAssertEqual(client.socket.taken.readableBytes, 2500, "the reply after the client's FIN arrives")
        XCTAssertTrue(client.socket.closed)
        XCTAssertTrue(client.backend.closed)
        let summary = try XCTUnwrap(world.observer.summaries.first)
        XCTAssertEqual(world.observer.summaries.count, 1)
        XCTAssertEqual(summary.reason, .clientClosed)
        XCTAssertEqual(summary.bytesIn, 1000)
        XCTAssertEqual(summary.bytesOut, 2500)
        XCTAssertEqual(summary.backend, "127.0.0.1:8080")
        XCTAssertEqual(world.tracker.count, 0, "the max_connections slot is released")
    }

    /// The defect this data path was rebuilt for: bytes queued for a slow client were dropped when the
    /// backend's FIN arrived after the client's own FIN (NIO escalates to a full close then).
    func testBackendFINAfterClientFINDoesNotDropBytesQueuedForTheClient() throws {
        let world = try ConnectionHarness()
        let client = try world.connect(socket: SimulatedSocket(peerReads: false))
        client.backend.peerSends(bytes(20_000, 7))
        world.settle()
        client.socket.peerSendsFIN()
        world.settle()
        XCTAssertTrue(client.backend.finSent)
        client.backend.peerSends(bytes(9_000, 8))
        client.backend.peerSendsFIN()  // our output is shut: NIO closes the backend channel fully
        world.settle()
        XCTAssertTrue(client.backend.closed)
        XCTAssertFalse(client.socket.closed, "the client still has bytes to receive")
        XCTAssertTrue(world.observer.summaries.isEmpty)

        client.socket.drain()
        world.settle()
        client.socket.drain()
        world.settle()
        var expected = bytes(20_000, 7)
        var tail = bytes(9_000, 8)
        expected.writeBuffer(&tail)
        XCTAssertEqual(client.socket.taken, expected, "every byte, in order")
        XCTAssertTrue(client.socket.closed)
        let summary = try XCTUnwrap(world.observer.summaries.first)
        XCTAssertEqual(summary.bytesOut, 29_000)
        XCTAssertEqual(summary.reason, .clientClosed)
    }

    func testClientFINIsPassedOnOnlyAfterTheBackendTookEveryByte() throws {
        let world = try ConnectionHarness()
        world.backendReads = false
        let client = try world.connect()
        client.socket.peerSends(bytes(10_000, 1))
        client.socket.peerSendsFIN()
        world.settle()
        XCTAssertFalse(client.backend.finSent, "10000 bytes still queued")
        XCTAssertEqual(client.backend.queuedBytes, 10_000)
        client.backend.drain()
        world.settle()
        XCTAssertEqual(client.backend.taken, bytes(10_000, 1))
        XCTAssertTrue(client.backend.finSent)
        client.backend.peerSendsFIN()
        world.settle()
        XCTAssertTrue(client.socket.finSent)
        XCTAssertTrue(client.socket.closed)
        XCTAssertEqual(world.observer.summaries.first?.bytesIn, 10_000)
    }

    func testClientResetStillDeliversWhatItSentToTheBackend() throws {
        let world = try ConnectionHarness()
        world.backendReads = false
        let client = try world.connect(socket: SimulatedSocket(peerReads: false))
        client.socket.peerSends(bytes(5_000, 4))
        world.settle()
        client.backend.peerSends(bytes(3_000, 5))
        world.settle()
        client.socket.peerResets()
        world.settle()
        XCTAssertTrue(world.observer.summaries.isEmpty, "the backend still has the client's bytes to take")
        client.backend.drain()
        world.settle()
        XCTAssertEqual(client.backend.taken, bytes(5_000, 4))
        XCTAssertTrue(client.backend.closed)
        let summary = try XCTUnwrap(world.observer.summaries.first)
        XCTAssertEqual(summary.reason, .clientClosed)
        XCTAssertEqual(summary.bytesIn, 5_000)
        XCTAssertEqual(summary.bytesOut, 0, "what was queued for the reset client was lost, and not counted")
    }

    func testBackendResetStillDeliversItsLastBytesToTheClient() throws {
        let world = try ConnectionHarness()
        let client = try world.connect(socket: SimulatedSocket(peerReads: false))
        client.backend.peerSends(bytes(4_000, 9))
        world.settle()
        client.backend.peerResets()
        world.settle()
        XCTAssertFalse(client.socket.closed)
        client.socket.drain()
        world.settle()
        XCTAssertEqual(client.socket.taken, bytes(4_000, 9))
        XCTAssertTrue(client.socket.closed)
        XCTAssertEqual(world.observer.summaries.first?.reason, .backendClosed)
        XCTAssertEqual(world.observer.summaries.first?.bytesOut, 4_000)
    }

    func testAClientThatStopsReadingStopsTheBackendBeingRead() throws {
        // buffer_size 16KiB: reads of at most 8 KiB, a side not read while 8 KiB are held for the other.
        let world = try ConnectionHarness(listenerTOML: #"mode = "plain"\#nbuffer_size = "16KiB""#)
        let client = try world.connect(socket: SimulatedSocket(peerReads: false))
        for index in 0..<10 { client.backend.peerSends(bytes(8 * 1024, UInt8(index))) }
        world.settle()
        XCTAssertLessThanOrEqual(client.socket.queuedBytes, 16 * 1024, "at most buffer_size held")
        XCTAssertEqual(client.socket.queuedBytes, 8 * 1024)
        let reads = client.backend.readRequests
        world.settle()
        XCTAssertEqual(client.backend.readRequests, reads, "the backend is not read while the client holds back")
        client.socket.drain()
        world.settle()
        XCTAssertGreaterThan(client.backend.readRequests, reads, "reading resumes once the client took the bytes")
        for _ in 0..<20 {
            client.socket.drain()
            world.settle()
        }
        XCTAssertEqual(client.socket.taken.readableBytes, 80 * 1024)
    }

    func testIdleTimeoutAbortsAndReleasesTheSlot() throws {
        let world = try ConnectionHarness(listenerTOML: #"mode = "plain"\#nidle_timeout = "300ms""#)
        let client = try world.connect()
        client.socket.peerSends(bytes(10, 1))
        world.settle()
        world.advance(.milliseconds(200))
        client.backend.peerSends(bytes(10, 2))
        world.settle()
        world.advance(.milliseconds(200))
        XCTAssertFalse(client.socket.closed, "activity 200 ms ago")
        world.advance(.milliseconds(101))
        XCTAssertTrue(client.socket.closed)
        XCTAssertTrue(client.backend.closed)
        XCTAssertEqual(world.observer.summaries.first?.reason, .idleTimeout)
        XCTAssertEqual(world.tracker.count, 0)
    }

    func testHalfCloseTimeoutClosesAQuietHalfClosedPair() throws {
        let world = try ConnectionHarness(
            listenerTOML: #"mode = "plain"\#nidle_timeout = "10s"\#nhalf_close_timeout = "300ms""#
        )
        let client = try world.connect()
        client.socket.peerSendsFIN()
        world.settle()
        world.advance(.milliseconds(299))
        XCTAssertFalse(client.socket.closed)
        world.advance(.milliseconds(1))
        XCTAssertTrue(client.socket.closed)
        XCTAssertEqual(world.observer.summaries.first?.reason, .idleTimeout)
    }

    func testShutdownEventAbortsBothSides() throws {
        let world = try ConnectionHarness()
        let client = try world.connect()
        world.tracker.closeAll()
        world.settle()
        XCTAssertTrue(client.socket.closed)
        XCTAssertTrue(client.backend.closed)
        XCTAssertEqual(world.observer.summaries.first?.reason, .shutdown)
        XCTAssertEqual(world.tracker.count, 0)
    }

    func testBackendFailureClosesTheClientAndCountsNothing() throws {
        let world = try ConnectionHarness()
        world.backendConnectsAtOnce = false
        let client = try world.connect()
        client.socket.peerSends(bytes(100, 1))
        world.settle()
        client.connector.fail(.backendUnavailable)
        world.settle()
        XCTAssertTrue(client.socket.finSent || client.socket.closed)
        let summary = try XCTUnwrap(world.observer.summaries.first)
        XCTAssertEqual(summary.reason, .backendUnavailable)
        XCTAssertEqual(summary.bytesIn, 0, "held bytes never reached a backend")
        XCTAssertEqual(summary.backend, "")
    }

    func testClientLeavingWhileConnectingCancelsTheAttempt() throws {
        let world = try ConnectionHarness()
        world.backendConnectsAtOnce = false
        let client = try world.connect()
        client.socket.peerResets()
        world.settle()
        XCTAssertTrue(client.connector.cancelled)
        XCTAssertEqual(world.observer.summaries.first?.reason, .clientClosed)
        XCTAssertEqual(world.tracker.count, 0)
    }

    func testPerClientLimitIsReleasedOnEveryClosePath() throws {
        let world = try ConnectionHarness(
            listenerTOML: #"mode = "plain"\#nmax_connections_per_ip = 1\#nidle_timeout = "300ms""#
        )
        let paths: [(String, (ClientEnd, ConnectionHarness) -> Void)] = [
            ("both FINs", { client, world in
                client.socket.peerSendsFIN()
                client.backend.peerSendsFIN()
                world.settle()
            }),
            ("client reset", { client, world in
                client.socket.peerResets()
                world.settle()
            }),
            ("backend reset", { client, world in
                client.backend.peerResets()
                world.settle()
            }),
            ("idle timeout", { _, world in world.advance(.milliseconds(301)) }),
            ("shutdown", { _, world in
                world.tracker.closeAll()
                world.settle()
            }),
        ]
        for (index, (name, close)) in paths.enumerated() {
            let client = try world.connect(from: "10.0.0.1", port: 40000 + index)
            let refused = try world.connect(from: "10.0.0.1", port: 41000 + index)
            XCTAssertTrue(refused.socket.closed, name)
            XCTAssertFalse(refused.connector.started, "\(name): a refused connection never dials")
            XCTAssertEqual(world.observer.summaries.last?.reason, .perIPLimit, name)
            close(client, world)
            XCTAssertTrue(client.socket.closed, name)
            XCTAssertEqual(world.tracker.count, 0, name)
        }
        let again = try world.connect(from: "10.0.0.1", port: 42000)
        XCTAssertFalse(again.socket.closed, "admitted again after every path released its count")
    }

    func testMaxConnectionsRefusesBeforeAnyByteIsRead() throws {
        let world = try ConnectionHarness(maxConnections: 1)
        let first = try world.connect(port: 40001)
        let second = try world.connect(port: 40002)
        XCTAssertTrue(second.socket.closed)
        XCTAssertEqual(second.socket.readRequests, 0, "nothing was read from the refused connection")
        XCTAssertEqual(world.observer.summaries.map(\.reason), [.maxConnections])
        XCTAssertFalse(first.socket.closed)
    }

    func testPerClientLimitsApplyToTheClientAPROXYHeaderNamesAndToThePeerForUNKNOWN() throws {
        let world = try ConnectionHarness(
            listenerTOML: #"mode = "plain"\#naccept_proxy_protocol = true\#nmax_connections_per_ip = 1"#
        )
        func client(peer: String, port: Int, header: String) throws -> ClientEnd {
            let end = try world.connect(from: peer, port: port)
            end.socket.peerSends(ByteBuffer(string: header))
            world.settle()
            return end
        }
        // Behind one balancer, two real clients: each counted on its own.
        let a = try client(peer: "10.0.0.5", port: 1, header: "PROXY TCP4 192.0.2.1 10.0.0.5 5000 443\r\n")
        let b = try client(peer: "10.0.0.5", port: 2, header: "PROXY TCP4 192.0.2.2 10.0.0.5 5001 443\r\n")
        XCTAssertFalse(a.socket.closed)
        XCTAssertFalse(b.socket.closed)
        XCTAssertTrue(a.connector.started)
        let again = try client(peer: "10.0.0.5", port: 3, header: "PROXY TCP4 192.0.2.1 10.0.0.5 5002 443\r\n")
        XCTAssertTrue(again.socket.closed)
        XCTAssertFalse(again.connector.started, "refused before any backend is contacted")
        XCTAssertEqual(world.observer.summaries.last?.reason, .perIPLimit)
        XCTAssertEqual(world.observer.summaries.last?.client, "192.0.2.1:5002", "logged as the client the header named")

        // UNKNOWN names no client: the socket's peer is counted, so it cannot dodge the limit.
        let unknown = try client(peer: "10.0.0.7", port: 4, header: "PROXY UNKNOWN\r\n")
        XCTAssertFalse(unknown.socket.closed)
        let unknownAgain = try client(peer: "10.0.0.7", port: 5, header: "PROXY UNKNOWN\r\n")
        XCTAssertTrue(unknownAgain.socket.closed)
        XCTAssertEqual(world.observer.summaries.last?.reason, .perIPLimit)
        XCTAssertEqual(world.observer.summaries.last?.client, "10.0.0.7:5")
    }

    func testUntrustedSourcesAreClosedAtAcceptBeforeAnyByteIsRead() throws {
        let world = try ConnectionHarness(
            listenerTOML: #"mode = "plain"\#naccept_proxy_protocol = true\#nproxy_protocol_trusted = ["10.0.0.0/8", "::ffff:192.0.2.0/120"]"#
        )
        let stranger = try world.connect(from: "192.0.3.1", port: 1)
        XCTAssertTrue(stranger.socket.closed)
        XCTAssertEqual(stranger.socket.readRequests, 0, "not a byte read")
        XCTAssertFalse(stranger.connector.started)
        XCTAssertEqual(world.observer.summaries.last?.reason, .proxyProtocolInvalid)
        XCTAssertEqual(world.observer.summaries.last?.detail, "untrusted source")
        XCTAssertEqual(world.tracker.count, 0, "an untrusted peer takes no max_connections slot")

        let balancer = try world.connect(from: "10.1.2.3", port: 2)
        XCTAssertFalse(balancer.socket.closed)
        let mapped = try world.connect(from: "192.0.2.9", port: 3)
        XCTAssertFalse(mapped.socket.closed, "an IPv4 peer matches the IPv4-mapped range")
    }
}
