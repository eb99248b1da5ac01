import SecProxyCore

/// Every metric the daemon exports: its name (API: SPEC §3 "Metrics") and its `# HELP` text.
///
/// One table, so that each name is registered with one help text whichever path makes it (the registry
/// refuses a second, different one) and so that the README and the tests can list them.
enum MetricCatalog {
    struct Entry: Sendable {
        let name: String
        let help: String
    }

    typealias Name = ListenerMetrics.Name

    static let buildInfo = "secproxy_build_info"
    static let processStartTime = "secproxy_process_start_time_seconds"
    static let openFDs = "secproxy_open_fds"
    static let maxFDs = "secproxy_max_fds"
    static let maxConnections = "secproxy_max_connections"
    static let backendUp = "secproxy_backend_up"
    static let certificateExpiry = "secproxy_certificate_expiry_timestamp_seconds"
    static let configReloads = "secproxy_config_reloads_total"

    static let entries: [Entry] = [
        Entry(name: Name.connectionsActive, help: "Client connections open now."),
        Entry(name: Name.connectionsTotal, help: "Client connections ended, by close reason (refused ones included)."),
        Entry(name: Name.handshakesTotal, help: "TLS handshakes completed, by version and whether a session was resumed."),
        Entry(name: Name.handshakeFailuresTotal, help: "TLS handshakes that failed or timed out, by reason."),
        Entry(name: Name.handshakeDurationSeconds, help: "Time from accept to a completed TLS handshake."),
        Entry(name: Name.bytesTotal, help: "Application bytes forwarded: in = from clients, out = to clients."),
        Entry(name: backendUp, help: "1 unless health checks or failed connects marked the backend down."),
        Entry(name: Name.backendConnectFailuresTotal, help: "Backend connects that failed (refused, timed out, unreachable)."),
        Entry(name: certificateExpiry, help: "Expiry (notAfter) of each served certificate, as a Unix time."),
        Entry(name: configReloads, help: "Configuration reloads (SIGHUP or watch_files), by result."),
        Entry(name: buildInfo, help: "Always 1; the version label says which secproxy is running."),
        Entry(name: processStartTime, help: "Start time of the secproxy process, as a Unix time."),
        Entry(name: openFDs, help: "File descriptors the process has open."),
        Entry(name: maxFDs, help: "The process's limit on open file descriptors (RLIMIT_NOFILE)."),
        Entry(name: maxConnections, help: "The configured [server] max_connections."),
    ]

    private static let helpByName: [String: String] = Dictionary(
        uniqueKeysWithValues: entries.map { ($0.name, $0.help) }
    )

    /// The help text of `name`; "" for a name outside the table (then the scrape has no `# HELP` line for it).
    static func help(for name: String) -> String {
        helpByName[name] ?? ""
    }

    /// Buckets of `secproxy_handshake_duration_seconds`: 1 ms (a resumption on loopback) to 10 s (the
    /// default `handshake_timeout`), roughly 1-2.5-5 per decade.
    static let handshakeBuckets: [Duration] = [
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10),
    ]
}
