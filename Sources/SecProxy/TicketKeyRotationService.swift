import ServiceLifecycle
import SecProxyTLS

/// Rotates the random session-ticket keys (no `ticket_key_file`) of the configuration in force on the
/// daemon's own schedule, so that a key is replaced, and the one before it erased, even while no ticket is
/// issued (the TLS layer rotates lazily, only when a ticket is issued or presented) and never inside a
/// handshake. Keys from a file are left alone (`rotateTicketKeys()` does nothing to them).
struct TicketKeyRotationService: Service {
    /// A minute under the TLS layer's own hourly rotation: each forced rotation moves that one an hour
    /// ahead, so it never fires between two of ours (which would retire a key after one interval, not two).
    static let defaultInterval: Duration = .seconds(3600 - 60)

    let controller: ProxyController
    let interval: Duration
    /// Told after each round (tests).
    let onRotate: @Sendable (_ contexts: Int) -> Void

    func run() async {
        let controller = self.controller
        let interval = self.interval
        let onRotate = self.onRotate
        await cancelWhenGracefulShutdown {
            let clock = ContinuousClock()
            var next = clock.now
            while true {
                next = max(next.advanced(by: interval), clock.now)
                do { try await clock.sleep(until: next) } catch { return }
                let contexts = await controller.tlsContexts
                for context in contexts {
                    context.rotateTicketKeys()
                }
                onRotate(contexts.count)
            }
        }
    }
}
