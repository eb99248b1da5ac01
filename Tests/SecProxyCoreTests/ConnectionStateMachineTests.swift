import NIOCore
import XCTest

@testable import SecProxyCore

/// The connection's state machine on its own: no channels, no clock. Every ordering of FINs, resets,
/// queued writes, timeouts and failures, asserting the exact actions and when the channels close.
final class ConnectionStateMachineTests: XCTestCase {
    typealias Machine = ConnectionStateMachine
    typealias Action = ConnectionStateMachine.Action

    private let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    private func machine(
        tls: Bool = false, proxyHeader: Bool = false, limit: Int = 100, idle: TimeAmount = .seconds(300),
        halfClose: TimeAmount = .seconds(30)
    ) -> Machine {
        Machine(
            configuration: .init(
                isTLS: tls, expectsProxyHeader: proxyHeader, idleTimeout: idle, halfCloseTimeout: halfClose,
                bufferLimit: limit
            )
        )
    }

    private func bytes(_ count: Int, _ value: UInt8 = 0x61) -> ByteBuffer {
        ByteBuffer(repeating: value, count: count)
    }

    /// A plain machine wired to its backend, nothing held.
    private func forwarding(limit: Int = 100, halfClose: TimeAmount = .seconds(30)) -> Machine {
        var m = machine(limit: limit, halfClose: halfClose)
        XCTAssertEqual(m.clientActive(handshakeDeadline: t0 + .seconds(10)), .connectBackend)
        XCTAssertEqual(
            m.backendConnected(now: t0),
            .wireBackend(.init(held: [], heldBytes: 0, closeOutput: false, readClient: false))
        )
        return m
    }

    /// Moves `count` bytes from `side` to the other side: read, flush, write completed.
    private func carry(_ m: inout Machine, _ count: Int, from side: ConnectionSide, at now: NIODeadline? = nil) {
        let now = now ?? t0
        XCTAssertTrue(m.shouldRead(side))
        XCTAssertEqual(m.read(bytes(count), from: side, now: now), .write(bytes(count), to: side.other))
        XCTAssertEqual(m.readComplete(from: side), .flush(side.other, bytes: count))
        XCTAssertEqual(m.writeCompleted(to: side.other, bytes: count, success: true, now: now), .none)
    }

    // MARK: - Before forwarding

    func testPlainConnectsAtOnceAndHoldsClientBytesUpToTheLimit() {
        var m = machine(limit: 100)
        XCTAssertEqual(m.clientActive(handshakeDeadline: t0 + .seconds(10)), .connectBackend)
        XCTAssertNil(m.deadline, "plain without PROXY header: no handshake deadline")
        XCTAssertTrue(m.shouldRead(.client))
        XCTAssertEqual(m.read(bytes(60), from: .client, now: t0), .none)
        XCTAssertTrue(m.shouldRead(.client))
        XCTAssertEqual(m.read(bytes(60), from: .client, now: t0), .none)
        XCTAssertFalse(m.shouldRead(.client), "120 bytes held: over the limit, the client is not read")
        XCTAssertEqual(
            m.backendConnected(now: t0),
            .wireBackend(.init(held: [bytes(60), bytes(60)], heldBytes: 120, closeOutput: false, readClient: false))
        )
        // The read held back while connecting is issued once the held bytes are written.
        XCTAssertEqual(m.writeCompleted(to: .backend, bytes: 120, success: true, now: t0), .read(.client))
        XCTAssertEqual(m.bytesIn, 120)
    }

    func testAReadHeldBackWhileConnectingGoesAtOnceWhenNothingIsHeld() {
        var m = machine(limit: 100)
        _ = m.clientActive(handshakeDeadline: t0)
        XCTAssertEqual(m.read(bytes(100), from: .client, now: t0), .none)
        XCTAssertFalse(m.shouldRead(.client))
        // The backend took nothing yet, but the limit counts what is queued: still held back.
        guard case .wireBackend(let wire) = m.backendConnected(now: t0) else { return XCTFail("no wire") }
        XCTAssertFalse(wire.readClient)
        XCTAssertEqual(m.writeCompleted(to: .backend, bytes: 100, success: true, now: t0), .read(.client))
    }

    func testClientFINWhileConnectingIsPassedOnAfterTheHeldBytes() {
        var m = machine()
        _ = m.clientActive(handshakeDeadline: t0)
        _ = m.read(bytes(10), from: .client, now: t0)
        XCTAssertEqual(m.inputClosed(.client, now: t0), .none)
        XCTAssertEqual(
            m.backendConnected(now: t0),
            .wireBackend(.init(held: [bytes(10)], heldBytes: 10, closeOutput: false, readClient: false))
        )
        XCTAssertEqual(m.writeCompleted(to: .backend, bytes: 10, success: true, now: t0), .closeOutput(.backend))
        XCTAssertEqual(m.firstCloser, .client)
    }

    func testClientFINWhileConnectingWithNothingHeldIsPassedOnAtWiring() {
        var m = machine()
        _ = m.clientActive(handshakeDeadline: t0)
        _ = m.inputClosed(.client, now: t0)
        XCTAssertEqual(
            m.backendConnected(now: t0),
            .wireBackend(.init(held: [], heldBytes: 0, closeOutput: true, readClient: false))
        )
        XCTAssertFalse(m.shouldRead(.client), "its input ended")
    }

    func testTLSWaitsForTheHandshakeAndRefusesAClientNotAllowed() {
        var m = machine(tls: true)
        XCTAssertEqual(m.clientActive(handshakeDeadline: t0 + .seconds(10)), .none)
        XCTAssertEqual(m.deadline, t0 + .seconds(10))
        XCTAssertTrue(m.shouldRead(.client), "the handshake needs reads")
        XCTAssertEqual(
            m.handshakeCompleted(allowed: false), .close(.init(client: .graceful, backend: nil, cancelConnect: false))
        )
        XCTAssertEqual(m.reason, .handshakeFailed)
        XCTAssertEqual(m.detail, "client certificate not allowed")
        XCTAssertEqual(m.channelInactive(.client, now: t0), .finish)
    }

    func testProxyHeaderThenHandshakeThenConnectUnderOneAbsoluteDeadline() {
        var m = machine(tls: true, proxyHeader: true)
        XCTAssertEqual(m.clientActive(handshakeDeadline: t0 + .seconds(10)), .none)
        XCTAssertEqual(m.deadline, t0 + .seconds(10))
        XCTAssertEqual(m.proxyHeaderReceived(), .none)
        XCTAssertEqual(m.deadline, t0 + .seconds(10), "the handshake does not get a fresh deadline")
        XCTAssertEqual(m.timerFired(now: t0 + .seconds(9)), .none)
        XCTAssertEqual(m.handshakeCompleted(allowed: true), .connectBackend)
        XCTAssertNil(m.deadline)
    }

    func testHandshakeDeadlineAborts() {
        var m = machine(tls: true)
        _ = m.clientActive(handshakeDeadline: t0 + .milliseconds(300))
        XCTAssertEqual(m.timerFired(now: t0 + .milliseconds(299)), .none)
        XCTAssertEqual(
            m.timerFired(now: t0 + .milliseconds(300)), .close(.init(client: .abort, backend: nil, cancelConnect: false))
        )
        XCTAssertEqual(m.reason, .handshakeTimeout)
        XCTAssertEqual(m.channelInactive(.client, now: t0), .finish)
    }

    func testProxyHeaderDeadlineInPlainModeIsAHandshakeTimeout() {
        var m = machine(proxyHeader: true)
        _ = m.clientActive(handshakeDeadline: t0 + .milliseconds(300))
        guard case .close = m.timerFired(now: t0 + .seconds(1)) else { return XCTFail("no close") }
        XCTAssertEqual(m.reason, .handshakeTimeout)
    }

    func testErrorsBeforeAndAfterTheHandshake() {
        var early = machine(tls: true)
        _ = early.clientActive(handshakeDeadline: t0)
        XCTAssertEqual(
            early.errorCaught(on: .client, .tls("wrong version number")),
            .close(.init(client: .abort, backend: nil, cancelConnect: false))
        )
        XCTAssertEqual(early.reason, .handshakeFailed)
        XCTAssertEqual(early.detail, "wrong version number")

        var proxy = machine(proxyHeader: true)
        _ = proxy.clientActive(handshakeDeadline: t0)
        _ = proxy.errorCaught(on: .client, .proxyProtocol("bad signature"))
        XCTAssertEqual(proxy.reason, .proxyProtocolInvalid)

        // Mid-stream: the TLS handler closes the client; what the backend still has queued is delivered.
        var late = forwarding()
        XCTAssertEqual(late.errorCaught(on: .client, .tls("bad record mac")), .none)
        XCTAssertEqual(late.channelInactive(.client, now: t0), .closeOutput(.backend))
        XCTAssertEqual(late.outputClosed(.backend, success: true), .close(.init(client: nil, backend: .graceful)))
        XCTAssertEqual(late.reason, .error)
        XCTAssertEqual(late.detail, "bad record mac")

        var other = forwarding()
        XCTAssertEqual(
            other.errorCaught(on: .backend, .other("ETIMEDOUT")), .close(.init(client: .abort, backend: .abort))
        )
        XCTAssertEqual(other.reason, .error)
    }

    func testBackendFailureClosesTheClientGracefullyWithTheReason() {
        var m = machine()
        _ = m.clientActive(handshakeDeadline: t0)
        XCTAssertEqual(
            m.backendFailed(.connectTimeout, detail: "connect timeout"),
            .close(.init(client: .graceful, backend: nil, cancelConnect: false))
        )
        XCTAssertEqual(m.reason, .connectTimeout)
        XCTAssertEqual(m.channelInactive(.client, now: t0), .finish)
    }

    func testClientLeavingWhileConnectingCancelsAndFinishesOnlyAfterTheAttemptEnded() {
        var m = machine()
        _ = m.clientActive(handshakeDeadline: t0)
        XCTAssertEqual(m.errorCaught(on: .client, .reset), .none)
        XCTAssertEqual(
            m.channelInactive(.client, now: t0), .close(.init(client: nil, backend: nil, cancelConnect: true))
        )
        XCTAssertEqual(m.reason, .clientClosed)
        XCTAssertEqual(m.backendFailed(.error, detail: nil), .finish, "the cancelled attempt reports last")
        XCTAssertEqual(m.reason, .clientClosed, "a cancel's reason is ignored")
    }

    // MARK: - Forwarding and backpressure

    func testBackpressureHoldsReadsUntilTheOtherSideTookTheBytes() {
        var m = forwarding(limit: 100)
        XCTAssertEqual(m.read(bytes(70), from: .client, now: t0), .write(bytes(70), to: .backend))
        XCTAssertTrue(m.shouldRead(.client), "70 < 100")
        XCTAssertEqual(m.read(bytes(50), from: .client, now: t0), .write(bytes(50), to: .backend))
        XCTAssertFalse(m.shouldRead(.client), "120 held")
        XCTAssertTrue(m.shouldRead(.backend), "the other direction is independent")
        XCTAssertEqual(m.readComplete(from: .client), .flush(.backend, bytes: 120))
        XCTAssertFalse(m.shouldRead(.client), "asked twice: still one pending read")
        XCTAssertEqual(m.writeCompleted(to: .backend, bytes: 120, success: true, now: t0), .read(.client))
        XCTAssertEqual(m.writeCompleted(to: .client, bytes: 0, success: true, now: t0), .none)
        XCTAssertEqual(m.bytesIn, 120)
    }

    func testBytesCountOnlyWhatWasWritten() {
        var m = forwarding()
        carry(&m, 30, from: .client)
        carry(&m, 40, from: .backend)
        _ = m.read(bytes(25), from: .backend, now: t0)
        _ = m.readComplete(from: .backend)
        XCTAssertEqual(m.writeCompleted(to: .client, bytes: 25, success: false, now: t0), .none)
        XCTAssertEqual(m.bytesIn, 30)
        XCTAssertEqual(m.bytesOut, 40, "a failed write is not counted")
    }

    // MARK: - Half-close orderings

    func testFINIsPassedOnOnlyAfterEveryQueuedByteIsWritten() {
        var m = forwarding()
        _ = m.read(bytes(50), from: .client, now: t0)
        _ = m.readComplete(from: .client)
        XCTAssertEqual(m.inputClosed(.client, now: t0), .none, "50 bytes still queued for the backend")
        XCTAssertEqual(m.writeCompleted(to: .backend, bytes: 50, success: true, now: t0), .closeOutput(.backend))
        XCTAssertEqual(m.outputClosed(.backend, success: true), .none, "the backend direction is still open")
        carry(&m, 20, from: .backend)
        XCTAssertEqual(m.inputClosed(.backend, now: t0), .closeOutput(.client))
        XCTAssertEqual(m.outputClosed(.client, success: true), .close(.init(client: .graceful, backend: .graceful)))
        XCTAssertEqual(m.reason, .clientClosed)
        XCTAssertEqual(m.channelInactive(.backend, now: t0), .none)
        XCTAssertEqual(m.channelInactive(.client, now: t0), .finish)
        XCTAssertEqual(m.bytesIn, 50)
        XCTAssertEqual(m.bytesOut, 20)
    }

    func testFINBeforeTheReadBurstEndedFlushesFirst() {
        // TLS: close_notify is decrypted in the same burst as the last record, before channelReadComplete.
        var m = forwarding()
        _ = m.read(bytes(10), from: .client, now: t0)
        XCTAssertEqual(m.inputClosed(.client, now: t0), .flush(.backend, bytes: 10))
        XCTAssertEqual(m.readComplete(from: .client), .none)
        XCTAssertEqual(m.writeCompleted(to: .backend, bytes: 10, success: true, now: t0), .closeOutput(.backend))
    }

    func testBothFINOrdersWithQueuedBytesBothWays() {
        for clientFirst in [true, false] {
            var m = forwarding()
            _ = m.read(bytes(30), from: .client, now: t0)
            _ = m.readComplete(from: .client)
            _ = m.read(bytes(40), from: .backend, now: t0)
            _ = m.readComplete(from: .backend)
            let first: ConnectionSide = clientFirst ? .client : .backend
            XCTAssertEqual(m.inputClosed(first, now: t0), .none)
            XCTAssertEqual(m.inputClosed(first.other, now: t0), .none)
            // Neither FIN passes before its bytes are written; the connection stays open meanwhile.
            XCTAssertEqual(
                m.writeCompleted(to: .backend, bytes: 30, success: true, now: t0), .closeOutput(.backend)
            )
            XCTAssertEqual(m.outputClosed(.backend, success: true), .none)
            XCTAssertEqual(m.writeCompleted(to: .client, bytes: 40, success: true, now: t0), .closeOutput(.client))
            XCTAssertEqual(
                m.outputClosed(.client, success: true), .close(.init(client: .graceful, backend: .graceful)),
                "clientFirst=\(clientFirst)"
            )
            XCTAssertEqual(m.reason, first.closeReason)
            XCTAssertEqual(m.bytesIn, 30)
            XCTAssertEqual(m.bytesOut, 40)
        }
    }

    func testABackendWhoseBothHalvesClosedGoesInactiveWithoutLosingItsFIN() {
        // NIO closes a plain channel fully once both halves are shut: inactive after the FIN was asked for.
        var m = forwarding()
        _ = m.inputClosed(.backend, now: t0)  // -> closeOutput(client)
        XCTAssertEqual(m.inputClosed(.client, now: t0), .closeOutput(.backend))
        XCTAssertEqual(m.channelInactive(.backend, now: t0), .none, "its FIN was on the way: done, not lost")
        XCTAssertEqual(m.outputClosed(.client, success: true), .close(.init(client: .graceful, backend: nil)))
        XCTAssertEqual(m.reason, .backendClosed)
    }

    func testClientResetDeliversWhatItSentThenClosesTheBackend() {
        var m = forwarding()
        _ = m.read(bytes(30), from: .client, now: t0)
        _ = m.readComplete(from: .client)
        _ = m.read(bytes(40), from: .backend, now: t0)
        _ = m.readComplete(from: .backend)
        XCTAssertEqual(m.errorCaught(on: .client, .reset), .none)
        // The 40 bytes for the client are lost; the 30 from it still reach the backend, then its FIN.
        XCTAssertEqual(m.channelInactive(.client, now: t0), .none)
        XCTAssertFalse(m.shouldRead(.backend), "nobody takes the backend's bytes any more")
        XCTAssertEqual(m.writeCompleted(to: .client, bytes: 40, success: false, now: t0), .none)
        XCTAssertEqual(m.writeCompleted(to: .backend, bytes: 30, success: true, now: t0), .closeOutput(.backend))
        XCTAssertEqual(m.outputClosed(.backend, success: true), .close(.init(client: nil, backend: .graceful)))
        XCTAssertEqual(m.reason, .clientClosed)
        XCTAssertEqual(m.channelInactive(.backend, now: t0), .finish)
        XCTAssertEqual(m.bytesIn, 30)
        XCTAssertEqual(m.bytesOut, 0)
    }

    func testBackendResetAfterItsLastBytesStillDeliversThemToTheClient() {
        var m = forwarding()
        _ = m.read(bytes(40), from: .backend, now: t0)
        _ = m.readComplete(from: .backend)
        _ = m.errorCaught(on: .backend, .reset)
        XCTAssertEqual(m.channelInactive(.backend, now: t0), .none, "40 bytes still queued for the client")
        XCTAssertFalse(m.shouldRead(.client), "the backend is gone")
        XCTAssertEqual(m.writeCompleted(to: .client, bytes: 40, success: true, now: t0), .closeOutput(.client))
        XCTAssertEqual(m.outputClosed(.client, success: true), .close(.init(client: .graceful, backend: nil)))
        XCTAssertEqual(m.reason, .backendClosed)
        XCTAssertEqual(m.bytesOut, 40)
    }

    func testBackendResetWithNothingQueuedPassesTheFINOnAtOnce() {
        var m = forwarding()
        XCTAssertEqual(m.channelInactive(.backend, now: t0), .closeOutput(.client))
        XCTAssertEqual(m.outputClosed(.client, success: false), .close(.init(client: .graceful, backend: nil)))
        XCTAssertEqual(m.channelInactive(.client, now: t0), .finish)
    }

    func testBothSidesGoingAwayAtOnceFinishes() {
        var m = forwarding()
        XCTAssertEqual(m.channelInactive(.client, now: t0), .closeOutput(.backend))
        XCTAssertEqual(m.channelInactive(.backend, now: t0), .finish)
        XCTAssertTrue(m.state.isClosed)
    }

    // MARK: - Timeouts and shutdown

    func testIdleTimeoutRunsFromTheLastByteEitherWay() {
        var m = forwarding()
        XCTAssertEqual(m.deadline, t0 + .seconds(300))
        carry(&m, 5, from: .backend, at: t0 + .seconds(100))
        XCTAssertEqual(m.deadline, t0 + .seconds(400))
        XCTAssertEqual(m.timerFired(now: t0 + .seconds(300)), .none, "activity moved the deadline")
        XCTAssertEqual(m.timerFired(now: t0 + .seconds(400)), .close(.init(client: .abort, backend: .abort)))
        XCTAssertEqual(m.reason, .idleTimeout)
        XCTAssertFalse(m.shouldRead(.client))
        XCTAssertEqual(m.channelInactive(.client, now: t0), .none)
        XCTAssertEqual(m.channelInactive(.backend, now: t0), .finish)
    }

    func testHalfCloseTimeoutRunsFromTheLastByteOfTheDirectionStillOpen() {
        var m = forwarding(halfClose: .seconds(30))
        XCTAssertEqual(m.inputClosed(.client, now: t0 + .seconds(10)), .closeOutput(.backend))
        _ = m.outputClosed(.backend, success: true)
        XCTAssertEqual(m.deadline, t0 + .seconds(40))
        carry(&m, 5, from: .backend, at: t0 + .seconds(35))
        XCTAssertEqual(m.deadline, t0 + .seconds(65))
        XCTAssertEqual(m.timerFired(now: t0 + .seconds(64)), .none)
        XCTAssertEqual(m.timerFired(now: t0 + .seconds(65)), .close(.init(client: .abort, backend: .abort)))
        XCTAssertEqual(m.reason, .idleTimeout, "SPEC: half_close_timeout ends with reason idle_timeout")
    }

    func testShutdownAbortsEverythingAndQueuedBytesAreNotCounted() {
        var m = forwarding()
        _ = m.read(bytes(10), from: .client, now: t0)
        _ = m.readComplete(from: .client)
        XCTAssertEqual(m.abort(.shutdown), .close(.init(client: .abort, backend: .abort)))
        XCTAssertEqual(m.writeCompleted(to: .backend, bytes: 10, success: false, now: t0), .none)
        XCTAssertEqual(m.abort(.idleTimeout), .none, "the first reason wins")
        XCTAssertEqual(m.reason, .shutdown)
        XCTAssertEqual(m.bytesIn, 0)
        XCTAssertEqual(m.read(bytes(5), from: .backend, now: t0), .none, "nothing is forwarded once closing")
    }
}

extension ConnectionStateMachine.State {
    fileprivate var isClosed: Bool {
        if case .closed = self { return true }
        return false
    }
}
