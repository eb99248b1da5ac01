import ServiceLifecycle
import UnixSignals

/// Turns SIGHUP into a reload and SIGTERM/SIGINT (or `Daemon.requestStop()`) into the group's graceful
/// shutdown: it returns on the first stop request, and it is configured to shut the group down when it does.
///
/// The signals are trapped (`Daemon.trapSignals`) before the listeners are bound, so that one arriving during
/// start-up waits in the sequence and is acted upon as soon as the group runs.
struct ControlService: Service {
    /// nil: signals are not this process's business (in-process tests).
    let signals: UnixSignalsSequence?
    /// `Daemon.requestStop()`.
    let stopRequests: AsyncStream<Void>
    let requestReload: @Sendable () -> Void
    let requestStop: @Sendable () -> Void

    func run() async {
        await withDiscardingTaskGroup { group in
            if let signals {
                group.addTask {
                    for await signal in signals {
                        if signal == .sighup {
                            requestReload()
                        } else {
                            requestStop()
                        }
                    }
                }
            }
            // The first stop request ends this service, which shuts the group down; a graceful shutdown
            // started otherwise ends it too.
            for await _ in stopRequests.cancelOnGracefulShutdown() {
                break
            }
            group.cancelAll()
        }
    }
}
