import Foundation
import NIOCore
import NIOPosix
import SecProxyConfig
@testable import SecProxyCore
import SecProxyTestSupport
import Synchronization
import XCTest

final class HealthCheckerTests: XCTestCase {
    // MARK: - HealthStateMachine

    func testThirdConsecutiveFailureMarksDown() {
        var machine = HealthStateMachine(fall: 3, rise: 2)
        XCTAssertNil(machine.record(success: false))
        XCTAssertNil(machine.record(success: false))
        XCTAssertTrue(machine.isUp, "two failures keep it up")
        XCTAssertEqual(machine.record(success: false), false)
        XCTAssertFalse(machine.isUp)
        XCTAssertNil(machine.record(success: false), "no second transition while down")
    }

    func testRiseConsecutiveSuccessesMarkUpAgain() {
        var machine = HealthStateMachine(fall: 3, rise: 2)
        for _ in 0..<3 { _ = machine.record(success: false) }
        XCTAssertFalse(machine.isUp)
        XCTAssertNil(machine.record(success: true))
        XCTAssertFalse(machine.isUp, "one success is not enough")
        XCTAssertEqual(machine.record(success: true), true)
        XCTAssertTrue(machine.isUp)
        XCTAssertNil(machine.record(success: true))
    }

    func testSuccessResetsFailureCount() {
        var machine = HealthStateMachine(fall: 3, rise: 2)
        XCTAssertNil(machine.record(success: false))
        XCTAssertNil(machine.record(success: false))
        XCTAssertNil(machine.record(success: true))
        XCTAssertEqual(machine.consecutiveFailures, 0)
        XCTAssertNil(machine.record(success: false))
        XCTAssertNil(machine.record(success: false))
        XCTAssertTrue(machine.isUp, "the failures before the success do not count")
        XCTAssertEqual(machine.record(success: false), false)
    }

    func testFailureResetsSuccessCountWhileDown() {
        var machine = HealthStateMachine(fall: 1, rise: 2)
        XCTAssertEqual(machine.record(success: false), false)
        XCTAssertNil(machine.record(success: true))
        XCTAssertNil(machine.record(success: false))
        XCTAssertNil(machine.record(success: true))
        XCTAssertFalse(machine.isUp, "the success before the failure does not count")
        XCTAssertEqual(machine.record(success: true), true)
    }

    func testFallAndRiseOfOneFlipAtOnce() {
        var machine = HealthStateMachine(fall: 1, rise: 1)
        XCTAssertEqual(machine.record(success: false), false)
        XCTAssertEqual(machine.record(success: true), true)
        XCTAssertEqual(machine.record(success: false), false)
    }

    // MARK: - BackendHealth

    func testBackendHealthTracksEachBackendAndReportsTransitionsOnce() {
        let transitions = TransitionLog()
        let health = BackendHealth(count: 3, fall: 2, rise: 2, onChange: transitions.onChange)
        XCTAssertEqual(health.upIndices, [0, 1, 2], "every backend starts up")

        XCTAssertNil(health.record(index: 1, success: false))
        XCTAssertEqual(health.record(index: 1, success: false), false)
        XCTAssertNil(health.record(index: 1, success: false))
        XCTAssertFalse(health.isUp(1))
        XCTAssertTrue(health.isUp(0))
        XCTAssertEqual(health.upIndices, [0, 2])

        health.record(index: 1, success: true)
        health.record(index: 1, success: true)
        health.record(index: 1, success: true)
        XCTAssertTrue(health.isUp(1))
        XCTAssertEqual(health.upIndices, [0, 1, 2])
        XCTAssertEqual(transitions.all, [.init(index: 1, isUp: false), .init(index: 1, isUp: true)])
    }

    func testConcurrentRecordsReportAlternatingTransitions() {
        let transitions = TransitionLog()
        let health = BackendHealth(count: 1, fall: 1, rise: 1, onChange: transitions.onChange)
        DispatchQueue.concurrentPerform(iterations: 1000) { iteration in
            health.record(index: 0, success: iteration % 2 == 0)
        }
        // Whatever the interleaving, reports alternate down/up, starting with down, and end on the state.
        let seen = transitions.all
        for (offset, transition) in seen.enumerated() {
            XCTAssertEqual(transition.isUp, offset % 2 == 1)
        }
        XCTAssertEqual(health.isUp(0), seen.last?.isUp ?? true)
    }

    // MARK: - HealthChecker

    func testClosedPortGoesDownAndComesBackUpWhenSomethingListens() throws {
        let live = try CountingListener(port: 0)
        defer { live.close() }
        let refusing = try RefusingPort()
        let transitions = TransitionLog()
        let health = BackendHealth(count: 2, fall: 3, rise: 2, onChange: transitions.onChange)
        let checker = HealthChecker(
            targets: [tcpTarget(live.port), tcpTarget(refusing.port)], health: health,
            interval: .milliseconds(50), timeout: .seconds(1), eventLoop: MultiThreadedEventLoopGroup.singleton.next()
        )
        checker.start()
        defer { try? checker.stop().wait() }

        try waitUntil(timeout: 10, "refused backend marked down", state: { transitions.description }) {
            !health.isUp(1)
        }
        XCTAssertTrue(health.isUp(0))
        XCTAssertEqual(health.upIndices, [0])
        XCTAssertGreaterThanOrEqual(live.connects, 1, "the live backend was checked")
        XCTAssertEqual(transitions.all, [.init(index: 1, isUp: false)])

        // Something starts listening on the refused port.
        refusing.release()
        let revived = try CountingListener(port: refusing.port)
        defer { revived.close() }
        try waitUntil(timeout: 10, "revived backend marked up", state: { transitions.description }) {
            health.isUp(1)
        }
        XCTAssertGreaterThanOrEqual(revived.connects, 1)

        // More rounds bring no more transitions.
        let seen = live.connects
        try waitUntil(timeout: 10, "three more rounds") { live.connects >= seen + 3 }
        XCTAssertEqual(transitions.all, [.init(index: 1, isUp: false), .init(index: 1, isUp: true)])
        XCTAssertEqual(health.upIndices, [0, 1])
    }

    func testRefusedBackendNeedsFallRounds() throws {
        // A live backend in the same pool is the round counter: each round connects to it once.
        let live = try CountingListener(port: 0)
        defer { live.close() }
        let refusing = try RefusingPort()
        let roundsAtTransition = Atomic<Int>(-1)
        let health = BackendHealth(count: 2, fall: 4, rise: 2) { index, isUp in
            if index == 1 && !isUp { roundsAtTransition.store(live.connects, ordering: .relaxed) }
        }
        let checker = HealthChecker(
            targets: [tcpTarget(live.port), tcpTarget(refusing.port)], health: health,
            interval: .milliseconds(50), timeout: .seconds(1), eventLoop: MultiThreadedEventLoopGroup.singleton.next()
        )
        checker.start()
        defer { try? checker.stop().wait() }
        try waitUntil(timeout: 10, "refused backend marked down") { !health.isUp(1) }
        // The accept of the fourth round's check may not have been counted yet, hence 3...4.
        XCTAssertGreaterThanOrEqual(roundsAtTransition.load(ordering: .relaxed), 3)
        XCTAssertLessThanOrEqual(roundsAtTransition.load(ordering: .relaxed), 4)
    }

    func testUnixSocketBackends() throws {
        let directory = try TemporaryDirectory(prefix: "hc")
        defer { directory.cleanup() }
        let socketPath = directory.file("up.sock")
        let listener = try CountingListener(unixPath: socketPath)
        defer { listener.close() }
        let transitions = TransitionLog()
        let health = BackendHealth(count: 2, fall: 2, rise: 2, onChange: transitions.onChange)
        let checker = HealthChecker(
            targets: [unixTarget(socketPath), unixTarget(directory.file("missing.sock"))], health: health,
            interval: .milliseconds(50), timeout: .seconds(1), eventLoop: MultiThreadedEventLoopGroup.singleton.next()
        )
        checker.start()
        defer { try? checker.stop().wait() }
        try waitUntil(timeout: 10, "missing socket marked down", state: { transitions.description }) {
            !health.isUp(1)
        }
        try waitUntil(timeout: 10, "unix listener checked twice") { listener.connects >= 2 }
        XCTAssertTrue(health.isUp(0))
        XCTAssertEqual(transitions.all, [.init(index: 1, isUp: false)])
    }

    func testStopEndsChecks() throws {
        let checked = try CountingListener(port: 0)
        defer { checked.close() }
        // A second checker with the same interval is the clock: its connects show that rounds would have run.
        let clock = try CountingListener(port: 0)
        defer { clock.close() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let checker = HealthChecker(
            targets: [tcpTarget(checked.port)], health: BackendHealth(count: 1, fall: 1, rise: 1),
            interval: .milliseconds(50), timeout: .seconds(1), eventLoop: loop
        )
        let clockChecker = HealthChecker(
            targets: [tcpTarget(clock.port)], health: BackendHealth(count: 1, fall: 1, rise: 1),
            interval: .milliseconds(50), timeout: .seconds(1), eventLoop: loop
        )
        checker.start()
        checker.start()  // a second start is a no-op, not a second timer
        clockChecker.start()
        defer { try? clockChecker.stop().wait() }

        try waitUntil(timeout: 10, "two checks", state: { "\(checked.connects)" }) { checked.connects >= 2 }
        try checker.stop().wait()

        // Let an accept of a check that connected just before the stop be counted.
        let settle = clock.connects
        try waitUntil(timeout: 10, "one clock round") { clock.connects >= settle + 1 }
        let afterStop = checked.connects

        let start = clock.connects
        try waitUntil(timeout: 10, "five clock rounds") { clock.connects >= start + 5 }
        XCTAssertEqual(checked.connects, afterStop, "no check after stop()")

        checker.start()  // a stopped checker stays stopped
        let restart = clock.connects
        try waitUntil(timeout: 10, "three clock rounds") { clock.connects >= restart + 3 }
        XCTAssertEqual(checked.connects, afterStop, "no check after start() on a stopped checker")
    }

    func testStopWithoutStartCompletes() throws {
        let checker = HealthChecker(
            targets: [], health: BackendHealth(count: 0, fall: 1, rise: 1), interval: .milliseconds(50),
            timeout: .seconds(1), eventLoop: MultiThreadedEventLoopGroup.singleton.next()
        )
        try checker.stop().wait()
    }

    // MARK: - Helpers

    private func tcpTarget(_ port: Int) -> BackendTarget {
        BackendTarget(BackendAddress(kind: .inet(host: "127.0.0.1", port: port), text: "127.0.0.1:\(port)"))
    }

    private func unixTarget(_ path: String) -> BackendTarget {
        BackendTarget(BackendAddress(kind: .unix(path: path), text: "unix:\(path)"))
    }
}

/// One `onChange` call.
private struct Transition: Equatable, Sendable, CustomStringConvertible {
    var index: Int
    var isUp: Bool

    var description: String { "\(index)=\(isUp ? "up" : "down")" }
}

/// Records `BackendHealth` transitions from any thread.
private final class TransitionLog: Sendable {
    private let transitions = Mutex<[Transition]>([])

    var onChange: @Sendable (Int, Bool) -> Void {
        { index, isUp in self.transitions.withLock { $0.append(Transition(index: index, isUp: isUp)) } }
    }

    var all: [Transition] { transitions.withLock { $0 } }

    var description: String { all.map(\.description).joined(separator: ", ") }
}

/// A listener on 127.0.0.1 or a unix socket that counts accepted connections (each health check is one).
private final class CountingListener: Sendable {
    private let channel: Channel
    private let counter: Counter

    /// Listens on TCP `port` of 127.0.0.1 (0 for a free one).
    convenience init(port: Int) throws {
        try self.init { try $0.bind(host: "127.0.0.1", port: port).wait() }
    }

    /// Listens on the unix socket `unixPath`.
    convenience init(unixPath: String) throws {
        try self.init { try $0.bind(unixDomainSocketPath: unixPath).wait() }
    }

    private init(bind: (ServerBootstrap) throws -> Channel) throws {
        let counter = Counter()
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                counter.increment()
                return channel.eventLoop.makeSucceededVoidFuture()
            }
        self.counter = counter
        self.channel = try bind(bootstrap)
    }

    /// Connections accepted so far.
    var connects: Int { counter.value }

    /// The TCP port listened on.
    var port: Int { channel.localAddress?.port ?? 0 }

    func close() {
        try? channel.close().wait()
    }
}

/// A counter shared with the accept path.
private final class Counter: Sendable {
    private let count = Atomic<Int>(0)

    func increment() { count.wrappingAdd(1, ordering: .relaxed) }

    var value: Int { count.load(ordering: .relaxed) }
}
