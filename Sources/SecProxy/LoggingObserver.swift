import Logging
import NIOCore
import SecProxyCore
import Synchronization

/// Turns data-path events into log lines: exactly one `connection closed` line per connection.
final class LoggingObserver: ConnectionObserver {
    let logger: Logger
    /// Lines a client can trigger besides its own connection line are logged at most once per interval.
    private let acceptFailureLimiter = LogRateLimiter(interval: .seconds(10))

    init(logger: Logger) {
        self.logger = logger
    }

    func connectionClosed(_ summary: ConnectionSummary) {
        guard logger.logLevel <= .info else { return }
        var metadata: Logger.Metadata = [
            "listener": .string(summary.listener),
            "client": .string(summary.client),
            "backend": .string(summary.backend),
            "sni": .string(summary.sni ?? ""),
            "alpn": .string(summary.alpn ?? ""),
            "tls_version": .string(summary.tlsVersion ?? ""),
            "cipher": .string(summary.cipher ?? ""),
            "resumed": .string(summary.resumed.map { $0 ? "true" : "false" } ?? ""),
            "bytes_in": .stringConvertible(summary.bytesIn),
            "bytes_out": .stringConvertible(summary.bytesOut),
            "duration_ms": .stringConvertible(summary.durationMilliseconds),
            "reason": .string(summary.reason.rawValue),
        ]
        if let detail = summary.detail {
            metadata["error"] = .string(detail)
        }
        logger.info("connection closed", metadata: metadata)
    }

    func acceptFailed(listener: String, error: IOError, backoff: TimeAmount) {
        guard let suppressed = acceptFailureLimiter.shouldLog() else { return }
        logger.error(
            "accept failed; pausing accepts",
            metadata: [
                "listener": .string(listener), "error": .string(ErrorText.of(error)),
                "backoff_ms": "\(backoff.nanoseconds / 1_000_000)", "suppressed": "\(suppressed)",
            ]
        )
    }

    func handshakeCompleted(listener: String, tlsVersion: String, resumed: Bool, seconds: Double) {}

    func backendConnectFailed(listener: String, backend: String, error: any Error) {
        logger.debug(
            "backend connect failed",
            metadata: ["listener": .string(listener), "backend": .string(backend), "error": .string(ErrorText.of(error))]
        )
    }
}

/// Lets a line through at most once per `interval`; counts the ones held back.
final class LogRateLimiter: Sendable {
    private let intervalNanoseconds: Int64
    private let lastLogged = Atomic<Int64>(Int64.min / 2)
    private let suppressed = Atomic<Int>(0)

    init(interval: TimeAmount) {
        self.intervalNanoseconds = interval.nanoseconds
    }

    /// The number of lines suppressed since the last one let through, or nil to suppress this one.
    func shouldLog(now: NIODeadline = .now()) -> Int? {
        let nowNanoseconds = Int64(now.uptimeNanoseconds)
        let last = lastLogged.load(ordering: .relaxed)
        guard nowNanoseconds - last >= intervalNanoseconds,
            lastLogged.compareExchange(expected: last, desired: nowNanoseconds, ordering: .relaxed).exchanged
        else {
            suppressed.wrappingAdd(1, ordering: .relaxed)
            return nil
        }
        return suppressed.exchange(0, ordering: .relaxed)
    }
}
