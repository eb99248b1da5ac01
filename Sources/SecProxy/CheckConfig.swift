import Foundation
import SecProxyConfig

/// `secproxy --check-config`: the report of a preparation, as text or JSON (SPEC §1).
public enum CheckConfig {
    public enum Format: String, Sendable, CaseIterable {
        case text
        case json
    }

    /// What to print and the exit code.
    public struct Report: Sendable {
        public var stdout: String
        public var stderr: String
        public var exitCode: Int32
    }

    /// Prepares the configuration at `path` and renders the outcome.
    public static func run(path: String, format: Format, now: Date = Date()) -> Report {
        render(Preparation.prepare(path: path, now: now), path: path, format: format)
    }

    static func render(_ result: PreparationResult, path: String, format: Format) -> Report {
        let ok = result.prepared != nil
        switch format {
        case .text:
            let stderr = result.diagnostics.map { "\($0)\n" }.joined()
            guard let prepared = result.prepared else {
                return Report(stdout: "", stderr: stderr, exitCode: 1)
            }
            return Report(stdout: summaryLine(prepared, path: path) + "\n", stderr: stderr, exitCode: 0)
        case .json:
            var json = "{\"ok\": \(ok), \"diagnostics\": ["
            json += result.diagnostics.map(jsonDiagnostic).joined(separator: ", ")
            json += "], \"summary\": "
            if let prepared = result.prepared {
                let configuration = prepared.configuration
                json += "{\"listeners\": \(configuration.listeners.count)"
                json += ", \"backends\": \(configuration.distinctBackendCount)"
                json += ", \"certificates\": \(prepared.certificates.count)"
                json += ", \"first_expiry\": "
                if let first = prepared.firstExpiry {
                    json += "{\"date\": \(LineLogHandler.jsonString(FileChecker.day(first.notAfter)))"
                    json += ", \"name\": \(LineLogHandler.jsonString(first.name))}"
                } else {
                    json += "null"
                }
                json += "}"
            } else {
                json += "null"
            }
            json += "}\n"
            return Report(stdout: json, stderr: "", exitCode: ok ? 0 : 1)
        }
    }

    /// `PATH: OK (N listeners, M backends, K certificates; first expiry YYYY-MM-DD NAME)`.
    static func summaryLine(_ prepared: PreparedConfiguration, path: String) -> String {
        let configuration = prepared.configuration
        var line = "\(path): OK (\(configuration.listeners.count) listeners, "
        line += "\(configuration.distinctBackendCount) backends, \(prepared.certificates.count) certificates"
        if let first = prepared.firstExpiry {
            line += "; first expiry \(FileChecker.day(first.notAfter)) \(first.name)"
        }
        return line + ")"
    }

    static func jsonDiagnostic(_ diagnostic: Diagnostic) -> String {
        let line = diagnostic.location.map { String($0.line) } ?? "null"
        let column = diagnostic.location.map { String($0.column) } ?? "null"
        return "{\"file\": \(LineLogHandler.jsonString(diagnostic.file)), \"line\": \(line), \"column\": \(column)"
            + ", \"severity\": \"\(diagnostic.severity.rawValue)\", \"message\": \(LineLogHandler.jsonString(diagnostic.message))}"
    }
}
