import Foundation
import SecProxyTestSupport
import XCTest

@testable import SecProxy

// MARK: - Waiting

/// Polls `condition` until it holds or `timeout` seconds pass; the pause between polls suspends (it never
/// blocks a thread the daemon under test needs).
func eventually(
    _ timeout: TimeInterval, _ description: @autoclosure () -> String, state: () async -> String = { "" },
    _ condition: () async throws -> Bool
) async throws {
    let deadline = Deadline(seconds: timeout)
    while true {
        if try await condition() { return }
        if deadline.hasPassed {
            let seen = await state()
            throw DeadlineExceeded("timed out after \(timeout)s waiting for: \(description())\n\(seen)")
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

// MARK: - Prometheus text

/// Renders `metrics` and parses it.
func scrapeMetrics(_ metrics: ProxyMetrics) throws -> PrometheusScrape {
    try PrometheusScrape(String(decoding: metrics.render(), as: UTF8.self))
}

/// Runs `promtool check metrics` on `text`; returns its exit code and output.
func promtoolCheck(_ text: String) throws -> (exitCode: Int32, output: String) {
    try PrometheusScrape.promtoolCheck(text)
}
