import ServiceLifecycle

/// Reloads, one at a time: on each request (SIGHUP, `Daemon.requestReload()`), and with `watch_files` when
/// the configuration or a file it names changed (polled every `watchInterval`; the controller decides
/// whether the configuration in force asks for it). A reload under way when the group shuts down finishes.
struct ReloadService: Service {
    let controller: ProxyController
    let requests: AsyncStream<Void>
    let watchInterval: Duration

    func run() async {
        let controller = self.controller
        let requests = self.requests
        let watchInterval = self.watchInterval
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await _ in requests {
                        await controller.reload()
                    }
                }
                group.addTask {
                    let clock = ContinuousClock()
                    var next = clock.now
                    while true {
                        next = max(next.advanced(by: watchInterval), clock.now)
                        do { try await clock.sleep(until: next) } catch { return }
                        await controller.reloadIfFilesChanged()
                    }
                }
            }
        }
    }
}
