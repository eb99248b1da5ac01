import ServiceLifecycle

/// The active health checkers (`[listener.health_check]`): the controller starts a listener's checkers with
/// its runtime and replaces them on reload; on shutdown they all stop, before the listeners drain.
struct HealthCheckService: Service {
    let controller: ProxyController

    func run() async {
        try? await gracefulShutdown()
        await controller.stopAllHealthChecks()
    }
}
