import ServiceLifecycle

/// The listeners, from the service group's point of view: they were bound before the group started (so that
/// `READY=1` means bound); shutting this service down is the graceful stop — stop accepting, `/healthz`
/// draining, drain up to `drain_timeout`, close the rest (`ProxyController.stop`).
struct ProxyService: Service {
    let controller: ProxyController

    func run() async {
        // Cancelled instead (a service failed): stop all the same, connections get their drain.
        try? await gracefulShutdown()
        await controller.stop()
    }
}
