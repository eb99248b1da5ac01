import NIOHTTP1

/// What `[admin]` serves, as a function of the request line: `GET /metrics` (Prometheus text format) and
/// `GET /healthz` (SPEC §3 "Admin"); HEAD for either; other paths 404, other methods 405.
///
/// No channel, no state: the HTTP handler calls it and writes what it returns (off the event loop, since a
/// scrape reads `/proc/self/fd`).
public struct AdminEndpoint: Sendable {
    /// One response.
    public struct Response: Sendable, Equatable {
        public var status: HTTPResponseStatus
        public var contentType: String
        public var body: [UInt8]
        /// `Allow` for 405.
        public var allow: String?

        static func text(_ status: HTTPResponseStatus, _ line: String, allow: String? = nil) -> Response {
            Response(status: status, contentType: AdminEndpoint.textType, body: Array((line + "\n").utf8), allow: allow)
        }
    }

    /// The Prometheus text exposition format, version 0.0.4.
    public static let metricsType = "text/plain; version=0.0.4; charset=utf-8"
    static let textType = "text/plain; charset=utf-8"
    static let allowed = "GET, HEAD"

    let metrics: ProxyMetrics
    let health: HealthState

    public init(metrics: ProxyMetrics, health: HealthState) {
        self.metrics = metrics
        self.health = health
    }

    /// The response to `method` on `uri` (a HEAD gets the GET's headers; the handler drops the body).
    public func respond(method: HTTPMethod, uri: String) -> Response {
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? uri
        let route: () -> Response
        switch path {
        case "/metrics":
            route = { Response(status: .ok, contentType: Self.metricsType, body: metrics.render(), allow: nil) }
        case "/healthz":
            route = {
                let report = health.report()
                return .text(report.healthy ? .ok : .serviceUnavailable, report.reason)
            }
        default:
            return .text(.notFound, "not found: GET /metrics or GET /healthz")
        }
        switch method {
        case .GET, .HEAD:
            return route()
        default:
            return .text(.methodNotAllowed, "method not allowed: use GET", allow: Self.allowed)
        }
    }
}
