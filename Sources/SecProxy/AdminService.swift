import ServiceLifecycle

/// The `[admin]` endpoint: bound by the controller at start-up (and moved by a reload); closed on shutdown
/// after the drain, so that `/healthz` says `draining` while connections finish.
struct AdminService: Service {
    let controller: ProxyController

    func run() async {
        try? await gracefulShutdown()
        await controller.closeAdmin()
    }
}
