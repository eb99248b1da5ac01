import CoreMetrics
import Foundation
import Prometheus
import SecProxyConfig
import SecProxyCore
import Synchronization

/// The daemon's metrics (SPEC §3 "Metrics", STYLE habit 11): one Prometheus registry, passed in, from which
/// every handle is made once — the listeners' `ListenerMetrics` for the data path, and the process-level
/// series the daemon itself sets (build, start time, descriptors, limits, certificates, backends, reloads).
///
/// Nothing here is global: a test makes its own registry and reads exactly what its daemon did.
public final class ProxyMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    let factory: SecProxyMetricsFactory
    private let openFDs: Prometheus.Gauge
    private let maxFDs: Prometheus.Gauge
    private let maxConnections: Prometheus.Gauge
    private let reloadSucceeded: Prometheus.Counter
    private let reloadFailed: Prometheus.Counter

    /// Series with a life shorter than the process: dropped when the configuration no longer has them.
    private struct Dynamic {
        /// `secproxy_certificate_expiry_timestamp_seconds` by listener and name.
        var certificates: [SeriesKey: Prometheus.Gauge] = [:]
        /// `secproxy_backend_up` by listener and backend.
        var backends: [SeriesKey: Prometheus.Gauge] = [:]
    }

    private struct SeriesKey: Hashable {
        var listener: String
        var value: String
    }

    private let dynamic = Mutex(Dynamic())

    /// - Parameters:
    ///   - registry: where every series goes; a new one by default (never a process-wide default).
    ///   - version: the `version` label of `secproxy_build_info`.
    ///   - startTime: `secproxy_process_start_time_seconds`.
    public init(
        registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        version: String = SecProxyVersion.string,
        startTime: Date = Date()
    ) {
        self.registry = registry
        self.factory = SecProxyMetricsFactory(registry: registry)
        func gauge(_ name: String, _ labels: [(String, String)] = []) -> Prometheus.Gauge {
            registry.makeGauge(descriptor: Self.descriptor(name), labels: labels)
        }
        gauge(MetricCatalog.buildInfo, [("version", version)]).set(to: 1)
        gauge(MetricCatalog.processStartTime).set(to: startTime.timeIntervalSince1970.rounded(.down))
        openFDs = gauge(MetricCatalog.openFDs)
        maxFDs = gauge(MetricCatalog.maxFDs)
        maxConnections = gauge(MetricCatalog.maxConnections)
        func reloads(_ result: String) -> Prometheus.Counter {
            registry.makeCounter(descriptor: Self.descriptor(MetricCatalog.configReloads), labels: [("result", result)])
        }
        // Both results exist from the start, so that increase() over a first failure is not lost.
        reloadSucceeded = reloads("success")
        reloadFailed = reloads("failure")
        refreshProcessGauges()
    }

    static func descriptor(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: MetricCatalog.help(for: name))
    }

    // MARK: - Listeners

    /// The handles of `listener`'s data path, made now (a reload makes new ones; same series).
    public func listenerMetrics(for listener: ListenerConfiguration) -> ListenerMetrics {
        var backends = listener.backends.map(\.text)
        for route in listener.routes {
            backends += route.backends.map(\.text)
        }
        return ListenerMetrics(listener: listener.name, tls: listener.mode == .tls, backends: backends, factory: factory)
    }

    /// A listener got a new runtime, whose backends all start up: `secproxy_backend_up` is 1 for each of
    /// `backends`, and the listener's other backends' series are dropped.
    func resetBackends(listener: String, backends: [String]) {
        let wanted = Set(backends.map { SeriesKey(listener: listener, value: $0) })
        dynamic.withLock { dynamic in
            for (key, gauge) in dynamic.backends where key.listener == listener && !wanted.contains(key) {
                registry.unregisterGauge(gauge)
                dynamic.backends[key] = nil
            }
            for key in wanted {
                let gauge =
                    dynamic.backends[key]
                    ?? registry.makeGauge(
                        descriptor: Self.descriptor(MetricCatalog.backendUp),
                        labels: [("listener", key.listener), ("backend", key.value)]
                    )
                gauge.set(to: 1)
                dynamic.backends[key] = gauge
            }
        }
    }

    /// A listener is gone (reload removed it, or it is closed): its backends' series go too.
    func removeBackends(listener: String) {
        resetBackends(listener: listener, backends: [])
    }

    /// Health checks (or failed connects) marked `backend` of `listener` up or down.
    func setBackend(listener: String, backend: String, up: Bool) {
        dynamic.withLock { dynamic in
            dynamic.backends[SeriesKey(listener: listener, value: backend)]?.set(to: up ? 1 : 0)
        }
    }

    // MARK: - Configuration

    /// The configuration in force changed (start-up or a reload): certificates and limits.
    func configurationApplied(_ prepared: PreparedConfiguration) {
        maxConnections.set(to: Double(prepared.configuration.server.maxConnections))
        var expiries: [SeriesKey: Date] = [:]
        for certificate in prepared.certificates {
            let key = SeriesKey(listener: certificate.listener, value: certificate.name)
            // Two certificates of a listener with the same name: the one that expires first is the alarm.
            expiries[key] = min(expiries[key] ?? certificate.notAfter, certificate.notAfter)
        }
        dynamic.withLock { dynamic in
            for (key, gauge) in dynamic.certificates where expiries[key] == nil {
                registry.unregisterGauge(gauge)
                dynamic.certificates[key] = nil
            }
            for (key, notAfter) in expiries {
                let gauge =
                    dynamic.certificates[key]
                    ?? registry.makeGauge(
                        descriptor: Self.descriptor(MetricCatalog.certificateExpiry),
                        labels: [("listener", key.listener), ("name", key.value)]
                    )
                gauge.set(to: notAfter.timeIntervalSince1970.rounded(.down))
                dynamic.certificates[key] = gauge
            }
        }
    }

    /// A reload ended: `success` when the new configuration is entirely in force.
    func reloaded(success: Bool) {
        (success ? reloadSucceeded : reloadFailed).increment()
    }

    // MARK: - Scrape

    /// The Prometheus text exposition of every series, with the sampled gauges read now.
    public func render() -> [UInt8] {
        refreshProcessGauges()
        return registry.emitToBuffer()
    }

    private func refreshProcessGauges() {
        if let open = Self.openDescriptorCount() { openFDs.set(to: Double(open)) }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            maxFDs.set(to: limit.rlim_cur == rlim_t.max ? Double.infinity : Double(limit.rlim_cur))
        }
    }

    /// Entries of `/proc/self/fd`, not counting the descriptor that reads it.
    static func openDescriptorCount() -> Int? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in
                name[0] == UInt8(ascii: ".") && (name[1] == 0 || (name[1] == UInt8(ascii: ".") && name[2] == 0))
            }
            if !isDot { count += 1 }
        }
        return max(0, count - 1)
    }
}
