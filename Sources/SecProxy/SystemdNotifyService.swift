import ServiceLifecycle
import SecProxyCore

/// `WATCHDOG=1` every half `WATCHDOG_USEC`, and `STATUS=N connections open` at most once per second when the
/// count changed (SPEC §3 systemd), each from its own task: nothing else the daemon does — a reload that takes
/// seconds, a drain — runs on them, so the watchdog is never starved. Shut down last but one, so the pings go
/// on through the drain.
struct SystemdNotifyService: Service {
    let notifier: SystemdNotifier
    let tracker: ConnectionTracker
    let health: HealthState
    /// The count `READY=1` carried.
    let initialCount: Int

    /// How often the connection count is looked at.
    static let statusInterval: Duration = .seconds(1)

    func run() async throws {
        guard notifier.isEnabled else {
            try await gracefulShutdown()
            return
        }
        let notifier = self.notifier
        let tracker = self.tracker
        let health = self.health
        let initialCount = self.initialCount
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                if let interval = notifier.watchdogInterval {
                    group.addTask { await Self.watchdog(notifier, every: max(interval, .milliseconds(1))) }
                }
                group.addTask { await Self.status(notifier, tracker: tracker, health: health, from: initialCount) }
            }
        }
    }

    private static func watchdog(_ notifier: SystemdNotifier, every interval: Duration) async {
        let clock = ContinuousClock()
        var next = clock.now
        while !Task.isCancelled {
            notifier.notify("WATCHDOG=1")
            // On a steady beat; after a late wake-up, the next ping a whole interval from now.
            next = max(next.advanced(by: interval), clock.now)
            do { try await clock.sleep(until: next) } catch { return }
        }
    }

    private static func status(_ notifier: SystemdNotifier, tracker: ConnectionTracker, health: HealthState, from count: Int)
        async
    {
        var last = count
        let clock = ContinuousClock()
        var next = clock.now
        while true {
            next = max(next.advanced(by: statusInterval), clock.now)
            do { try await clock.sleep(until: next) } catch { return }
            guard health.phase != .draining else { continue }
            let count = tracker.count
            if count != last {
                last = count
                notifier.notify("STATUS=\(count) connections open")
            }
        }
    }
}
