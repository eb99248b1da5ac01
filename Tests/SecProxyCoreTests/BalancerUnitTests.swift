import SecProxyConfig
import XCTest

@testable import SecProxyCore

/// `Balancer` on its own (SPEC §2 `balance`, §3 Balancing): which index each strategy tries first, given the
/// open connections recorded through `opened` / `closed`.
final class BalancerUnitTests: XCTestCase {
    // MARK: - Helpers

    /// `count` calls of `first()`.
    private func picks(_ balancer: Balancer, _ count: Int) -> [Int] {
        (0..<count).map { _ in balancer.first() }
    }

    /// How often each index in `0..<size` occurs in `picks`.
    private func frequencies(_ picks: [Int], size: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: size)
        for pick in picks { counts[pick] += 1 }
        return counts
    }

    /// Records `loads[i]` open connections on index `i`.
    private func load(_ balancer: Balancer, _ loads: [Int]) {
        for (index, open) in loads.enumerated() {
            for _ in 0..<open { balancer.opened(index) }
        }
    }

    // MARK: - round_robin

    func testRoundRobinGivesEachIndexInTurn() {
        let balancer = Balancer(strategy: .roundRobin, count: 3)
        let chosen = picks(balancer, 12)
        XCTAssertEqual(chosen, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    }

    func testRoundRobinIgnoresLoad() {
        let balancer = Balancer(strategy: .roundRobin, count: 2)
        load(balancer, [7, 0])
        let chosen = picks(balancer, 6)
        XCTAssertEqual(frequencies(chosen, size: 2), [3, 3], "round_robin must not look at open connections: \(chosen)")
        for (offset, pick) in chosen.enumerated() {
            XCTAssertEqual(pick, (chosen[0] + offset) % 2, "not a rotation: \(chosen)")
        }
    }

    func testRoundRobinWithOneBackend() {
        let balancer = Balancer(strategy: .roundRobin, count: 1)
        XCTAssertEqual(Set(picks(balancer, 10)), [0])
    }

    // MARK: - least_connections

    func testLeastConnectionsPicksTheFewestOpen() {
        let balancer = Balancer(strategy: .leastConnections, count: 3)
        load(balancer, [2, 1, 3])
        XCTAssertEqual(balancer.openConnections, [2, 1, 3])
        // No opens between the picks: the load stays the same, so the answer does too.
        XCTAssertEqual(Set(picks(balancer, 9)), [1], "index 1 has the fewest open connections")
    }

    func testLeastConnectionsCountsOpenedMinusClosed() {
        let balancer = Balancer(strategy: .leastConnections, count: 3)
        load(balancer, [2, 1, 3])
        // Index 2 had the most, but all of its connections ended.
        for _ in 0..<3 { balancer.closed(2) }
        XCTAssertEqual(balancer.openConnections, [2, 1, 0])
        XCTAssertEqual(Set(picks(balancer, 9)), [2])
        // Index 0 drops to zero too: a tie of 0 and 2 (index 1 still has one open).
        balancer.closed(0)
        balancer.closed(0)
        XCTAssertEqual(balancer.openConnections, [0, 1, 0])
        let chosen = picks(balancer, 12)
        XCTAssertEqual(Set(chosen), [0, 2], "only the least loaded indexes: \(chosen)")
        // Both tied indexes must get a real share. (The scan from the rotation gives 1:2 here, not 1:1: the
        // rotation start that lands on index 1 falls through to index 2.)
        let counts = frequencies(chosen, size: 3)
        XCTAssertGreaterThanOrEqual(counts[0], 3, "the tie must be spread: \(chosen)")
        XCTAssertGreaterThanOrEqual(counts[2], 3, "the tie must be spread: \(chosen)")
    }

    func testLeastConnectionsSpreadsTiesEvenly() {
        let count = 4
        let balancer = Balancer(strategy: .leastConnections, count: count)
        let chosen = picks(balancer, 3 * count)
        XCTAssertEqual(
            frequencies(chosen, size: count),
            [3, 3, 3, 3],
            "with no connection open every index must be chosen equally often: \(chosen)"
        )
    }

    func testLeastConnectionsFollowsTheLoadAsConnectionsOpen() {
        // Each pick is opened at once, as the proxy does: the picks fill the backends evenly.
        let balancer = Balancer(strategy: .leastConnections, count: 3)
        load(balancer, [4, 0, 2])
        var chosen: [Int] = []
        for _ in 0..<6 {
            let index = balancer.first()
            chosen.append(index)
            balancer.opened(index)
        }
        XCTAssertEqual(Array(chosen.prefix(2)), [1, 1], "index 1 first catches up with index 2: \(chosen)")
        XCTAssertEqual(balancer.openConnections, [4, 4, 4], "picks \(chosen)")
    }

    func testLeastConnectionsWithOneBackend() {
        let balancer = Balancer(strategy: .leastConnections, count: 1)
        load(balancer, [5])
        XCTAssertEqual(Set(picks(balancer, 10)), [0])
    }

    // MARK: - random_two

    func testRandomTwoPrefersTheLessLoadedOfItsPair() {
        // Index 1 loses only against nothing: any pair containing it picks it. The pair {0, 2} is a tie and
        // goes either way. Expected share of index 1: 2/3.
        let balancer = Balancer(strategy: .randomTwo, count: 3)
        load(balancer, [9, 0, 9])
        let total = 300
        let counts = frequencies(picks(balancer, total), size: 3)
        XCTAssertGreaterThanOrEqual(counts[1], total * 55 / 100, "index 1 must win most picks: \(counts)")
        XCTAssertLessThan(counts[1], total, "the pair {0, 2} must sometimes be drawn: \(counts)")
        XCTAssertGreaterThan(counts[0] + counts[2], 0, "\(counts)")
    }

    func testRandomTwoNeverPicksTheMostLoaded() {
        // The most loaded index is always paired with a less loaded one (the two picks are distinct).
        let balancer = Balancer(strategy: .randomTwo, count: 3)
        load(balancer, [0, 3, 9])
        let total = 300
        let counts = frequencies(picks(balancer, total), size: 3)
        XCTAssertEqual(counts[2], 0, "the most loaded index must never be chosen: \(counts)")
        // Index 0 wins every pair it is in (2/3 of them); index 1 only the pair {1, 2}.
        XCTAssertGreaterThanOrEqual(counts[0], total * 55 / 100, "\(counts)")
        XCTAssertGreaterThan(counts[1], 0, "the pair {1, 2} must sometimes be drawn: \(counts)")
    }

    func testRandomTwoWithTwoBackendsAlwaysPicksTheLessLoaded() {
        let balancer = Balancer(strategy: .randomTwo, count: 2)
        load(balancer, [4, 1])
        XCTAssertEqual(Set(picks(balancer, 100)), [1])
        for _ in 0..<4 { balancer.closed(0) }
        XCTAssertEqual(balancer.openConnections, [0, 1])
        XCTAssertEqual(Set(picks(balancer, 100)), [0])
    }

    func testRandomTwoBreaksTiesBothWays() {
        let balancer = Balancer(strategy: .randomTwo, count: 2)
        let counts = frequencies(picks(balancer, 200), size: 2)
        // Expected 100 each; below 50 is more than 7 standard deviations away.
        XCTAssertGreaterThanOrEqual(counts[0], 50, "\(counts)")
        XCTAssertGreaterThanOrEqual(counts[1], 50, "\(counts)")
    }

    func testRandomTwoWithOneBackendAlwaysPicksIt() {
        let balancer = Balancer(strategy: .randomTwo, count: 1)
        XCTAssertEqual(Set(picks(balancer, 50)), [0])
        load(balancer, [3])
        XCTAssertEqual(Set(picks(balancer, 50)), [0])
    }
}
