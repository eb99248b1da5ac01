import Foundation
import NIOCore
import SecProxyCore
import Synchronization

/// One listener's `ConnectionObserver`: each data-path event becomes its log line (`LoggingObserver`, shared by
/// all listeners), its metrics (the listener's current `ListenerMetrics`) and, for accept failures, `/healthz`.
///
/// Made once per bound listener; a reload hands it the new runtime's metrics (`use(_:)`), the same series.
final class ListenerObserver: ConnectionObserver {
    private let logging: LoggingObserver
    private let health: HealthState
    /// Set right after the runtime is made (the runtime's health callback refers back to this observer).
    private let current = Mutex<ListenerRuntime?>(nil)

    init(logging: LoggingObserver, health: HealthState) {
        self.logging = logging
        self.health = health
    }

    /// The listener's runtime now (its metrics are the ones counted).
    var runtime: ListenerRuntime? { current.withLock { $0 } }

    /// A reload replaced the listener's runtime.
    func use(_ runtime: ListenerRuntime) {
        current.withLock { $0 = runtime }
    }

    private var metrics: ListenerMetrics { current.withLock { $0?.metrics } ?? .noop }

    func connectionClosed(_ summary: ConnectionSummary) {
        logging.connectionClosed(summary)
        let metrics = self.metrics
        if let failure = ListenerMetrics.HandshakeFailure(closeReason: summary.reason, detail: summary.detail) {
            metrics.handshakeFailed(reason: failure)
        }
    }

    func handshakeCompleted(listener: String, tlsVersion: String, resumed: Bool, seconds: Double) {
        logging.handshakeCompleted(listener: listener, tlsVersion: tlsVersion, resumed: resumed, seconds: seconds)
        metrics.handshakeCompleted(version: tlsVersion, resumed: resumed, seconds: seconds)
    }

    func backendConnectFailed(listener: String, backend: String, error: any Error) {
        logging.backendConnectFailed(listener: listener, backend: backend, error: error)
        metrics.backendConnectFailed(backend: backend)
    }

    func acceptFailed(listener: String, error: IOError, backoff: TimeAmount) {
        logging.acceptFailed(listener: listener, error: error, backoff: backoff)
        health.acceptFailed(listener: listener, reason: String(cString: strerror(error.errnoCode)))
    }
}
