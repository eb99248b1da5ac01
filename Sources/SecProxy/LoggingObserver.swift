import Logging
import SecProxyCore

/// Turns data-path events into log lines: exactly one `connection closed` line per connection.
struct LoggingObserver: ConnectionObserver {
    let logger: Logger

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

    func handshakeCompleted(listener: String, tlsVersion: String, resumed: Bool, seconds: Double) {}

    func backendConnectFailed(listener: String, backend: String, error: any Error) {
        logger.debug(
            "backend connect failed",
            metadata: ["listener": .string(listener), "backend": .string(backend), "error": "\(error)"]
        )
    }
}
