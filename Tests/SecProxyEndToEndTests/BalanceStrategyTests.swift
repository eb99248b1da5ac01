import Foundation
import SecProxyTestSupport
import XCTest

/// `balance = "least_connections"` and `"random_two"` seen from outside (SPEC §2 `balance`, §3 Balancing,
/// Forwarding): connections are held open through the daemon, and each new one must go to the backend with
/// fewer open connections; failover past a dead backend works whatever the strategy.
final class BalanceStrategyTests: ProxyTestCase {
    // MARK: - Helpers

    /// A connection held open through the proxy, and the backend it reached.
    private struct Held {
        var id: String
        var clientPort: Int
        /// Index into the test's backends.
        var backend: Int
    }

    /// Opens connection `id` through `address`, echoes once (so the backend connection exists), and finds out which
    /// of `backends` got it from their open-connection counts.
    private func openHeld(
        _ id: String,
        _ driver: ClientDriver,
        _ address: ListenerAddress,
        _ backends: [EchoServer],
        _ proxy: ProxyProcess,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws -> Held {
        let before = backends.map(\.activeConnections)
        let opened = try driver.open(id, .plain(address))
        XCTAssertTrue(opened.ok, "\(opened)\n\(proxy.outputTail())", file: file, line: line)
        let echoed = try driver.echo(id, "hello from \(id)")
        XCTAssertTrue(echoed.ok, "\(echoed)\n\(proxy.outputTail())", file: file, line: line)
        var after: [Int] = []
        try waitUntil(
            timeout: 5,
            "one more open backend connection for \(id)",
            state: { "before \(before), now \(backends.map(\.activeConnections))" }
        ) {
            after = backends.map(\.activeConnections)
            return after.reduce(0, +) == before.reduce(0, +) + 1
        }
        let grown = (0..<backends.count).filter { after[$0] == before[$0] + 1 }
        XCTAssertEqual(grown.count, 1, "before \(before), after \(after)", file: file, line: line)
        return Held(id: id, clientPort: try XCTUnwrap(opened.localPort, file: file, line: line), backend: grown[0])
    }

    /// Closes `held` and waits for its connection line (the daemon has then released its backend slot).
    private func closeHeld(_ held: Held, _ driver: ClientDriver, _ proxy: ProxyProcess) throws -> [String: String] {
        try driver.close(held.id)
        return Logfmt.parse(try connectionLine(of: proxy, clientPort: held.clientPort))
    }

    /// Open connections per backend among `held`.
    private func shares(_ held: [Held], backends: Int) -> [Int] {
        (0..<backends).map { index in held.filter { $0.backend == index }.count }
    }

    /// The scenario for a load-aware strategy with two echo backends:
    /// 1. three held connections split 2 : 1, the fourth goes to the backend with one;
    /// 2. the connections of one backend end: the next two both go to it (a rotation would alternate);
    /// 3. every connection line names the backend that really got the connection.
    private func assertFollowsOpenConnections(_ strategy: String) throws {
        let backends = [try echoBackend(), try echoBackend()]
        let (proxy, address) = try startProxy(
            .plain("raw", backends: backends.map(\.address), settings: ["balance": .string(strategy)])
        )
        let driver = try driver()
        var held: [Held] = []
        for index in 1...3 {
            held.append(try openHeld("c\(index)", driver, address, backends, proxy))
        }
        XCTAssertEqual(
            shares(held, backends: 2).sorted(),
            [1, 2],
            "three sequential connections: the second goes to the idle backend, so 2 : 1 (\(held))"
        )
        XCTAssertEqual(backends.map(\.activeConnections), shares(held, backends: 2), "all three must stay open")
        let lighter = shares(held, backends: 2)[0] < shares(held, backends: 2)[1] ? 0 : 1
        let fourth = try openHeld("c4", driver, address, backends, proxy)
        XCTAssertEqual(
            fourth.backend,
            lighter,
            "the fourth connection must go to the backend with fewer open connections (\(held))"
        )
        held.append(fourth)
        XCTAssertEqual(backends.map(\.activeConnections), [2, 2])

        // The connections of backend 0 end: it now has none, backend 1 has two.
        var lines: [Int: [String: String]] = [:]
        var everyone = held
        for connection in held where connection.backend == 0 {
            lines[connection.clientPort] = try closeHeld(connection, driver, proxy)
        }
        held.removeAll { $0.backend == 0 }
        try waitUntil(timeout: 5, "backend 0 sees its connections closed", state: {
            "\(backends.map(\.activeConnections))"
        }) { backends[0].activeConnections == 0 }
        for index in 5...6 {
            let next = try openHeld("c\(index)", driver, address, backends, proxy)
            XCTAssertEqual(
                next.backend,
                0,
                "c\(index) must go to backend 0 (open: \(backends.map(\.activeConnections)) after it)\n"
                    + proxy.outputTail()
            )
            held.append(next)
            everyone.append(next)
        }
        XCTAssertEqual(backends.map(\.activeConnections), [2, 2])

        for connection in held {
            lines[connection.clientPort] = try closeHeld(connection, driver, proxy)
        }
        for (port, fields) in lines {
            XCTAssertEqual(fields["listener"], "raw")
            XCTAssertEqual(fields["reason"], "client_closed", "client port \(port): \(fields)")
        }
        for connection in everyone {
            XCTAssertEqual(
                lines[connection.clientPort]?["backend"],
                backends[connection.backend].address,
                "the connection line of \(connection.id) must name the backend that got it"
            )
        }
        XCTAssertEqual(proxy.connectionLogLines.count, 6, proxy.outputTail())
        let logged = Dictionary(grouping: proxy.connectionLogs.compactMap { $0["backend"] }, by: { $0 })
            .mapValues(\.count)
        XCTAssertEqual(logged[backends[0].address], backends[0].connectionCount, "\(logged)")
        XCTAssertEqual(logged[backends[1].address], backends[1].connectionCount, "\(logged)")
    }

    /// Backends `[dead, echo]`: whatever the strategy picks first, every connection reaches the echo server, also
    /// while connections are held open (the dead backend then has the fewest open connections, so it is the
    /// first choice every time).
    private func assertFailsOverPastADeadBackend(_ strategy: String) throws {
        let dead = try RefusingPort()
        let echo = try echoBackend()
        let (proxy, address) = try startProxy(
            tlsListener(backends: [dead.address, echo.address], settings: ["balance": .string(strategy)])
        )
        let driver = try driver()
        var ports: [Int] = []
        for index in 0..<3 {
            let opened = try driver.open("h\(index)", .tls(address))
            XCTAssertTrue(opened.ok, "\(opened)\n\(proxy.outputTail())")
            let echoed = try driver.echo("h\(index)", "held \(index)")
            XCTAssertTrue(echoed.ok, "held connection \(index) must reach the live backend: \(echoed)\n\(proxy.outputTail())")
            ports.append(try XCTUnwrap(opened.localPort))
        }
        XCTAssertEqual(echo.activeConnections, 3)
        for index in 0..<3 {
            let result = try python.transfer(.tls(address), payload: .text("try \(index)"), timeout: 10)
            XCTAssertTrue(result.ok, "\(result)\n\(proxy.outputTail())")
            XCTAssertEqual(result.receivedText, "try \(index)")
            ports.append(try XCTUnwrap(result.localPort))
        }
        for index in 0..<3 { try driver.close("h\(index)") }
        for port in ports {
            let fields = Logfmt.parse(try connectionLine(of: proxy, clientPort: port))
            XCTAssertEqual(fields["backend"], echo.address, "\(fields)")
            XCTAssertEqual(fields["reason"], "client_closed", "\(fields)")
        }
        XCTAssertEqual(echo.connectionCount, 6)
    }

    // MARK: - Tests

    func testLeastConnectionsSendsNewConnectionsToTheBackendWithFewerOpen() throws {
        try assertFollowsOpenConnections("least_connections")
    }

    func testRandomTwoWithTwoBackendsBehavesLikeLeastConnections() throws {
        // With two backends the random pair is always both of them, so the less loaded one always wins.
        try assertFollowsOpenConnections("random_two")
    }

    func testLeastConnectionsFailsOverPastADeadFirstBackend() throws {
        try assertFailsOverPastADeadBackend("least_connections")
    }

    func testRandomTwoFailsOverPastADeadFirstBackend() throws {
        try assertFailsOverPastADeadBackend("random_two")
    }
}
