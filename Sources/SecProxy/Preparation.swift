import Foundation
import SecProxyConfig
import SecProxyTLS

/// A configuration that passed every check, with everything the listeners need already built: one immutable
/// snapshot, whose TLS contexts hold the very certificates, keys, CAs, CRLs, OCSP responses and ticket keys the
/// checks parsed (each file read once).
///
/// `--check-config`, startup and reload all make one of these the same way (`Preparation.prepare`),
/// off the event loops; the daemon then binds or swaps atomically.
public struct PreparedConfiguration: Sendable {
    public let configuration: ProxyConfiguration
    /// One server context per `tls` listener, by listener name.
    public let tlsContexts: [String: TLSServerContext]
    /// One client context per listener with `[listener.backend_tls]`, by listener name.
    public let backendTLSContexts: [String: TLSClientContext]
    /// Every server certificate (default and SNI), for the summary and expiry metrics.
    public let certificates: [CertificateSummary]

    /// The certificate that expires first.
    public var firstExpiry: CertificateSummary? {
        certificates.min { $0.notAfter < $1.notAfter }
    }
}

/// One server certificate of a listener.
public struct CertificateSummary: Sendable {
    public let listener: String
    /// First DNS SAN, else the CN.
    public let name: String
    public let notAfter: Date
}

/// The outcome of preparing: the prepared configuration when there were no errors, and every diagnostic.
public struct PreparationResult: Sendable {
    /// Why there is no prepared configuration.
    public enum Failure: Sendable, Equatable {
        /// The configuration is wrong (SPEC §1: exit 1).
        case invalidConfiguration
        /// The only errors are key files that could not be opened or read: for the daemon at startup a runtime
        /// failure (SPEC §1: exit 3, "cannot read a key"), for `--check-config` still an invalid configuration.
        case cannotReadKey
    }

    public var prepared: PreparedConfiguration?
    public var diagnostics: [Diagnostic]
    /// `nil` exactly when `prepared` is set.
    public var failure: Failure?

    init(prepared: PreparedConfiguration?, diagnostics: [Diagnostic], unreadableKeys: Int = 0) {
        self.prepared = prepared
        self.diagnostics = diagnostics
        if prepared != nil {
            failure = nil
        } else {
            let errors = diagnostics.filter { $0.severity == .error }.count
            failure = unreadableKeys > 0 && errors == unreadableKeys ? .cannotReadKey : .invalidConfiguration
        }
    }
}

/// parse → validate → load certificates and keys → build every TLS context.
///
/// One pass over the files: each file the configuration names is opened and read once (`TLSFileSet`), its
/// contents parsed once; the diagnostics are computed from those objects (`FileChecker`) and the TLS contexts
/// are built from the same ones, so what runs is exactly what was checked.
public enum Preparation {
    /// Certificates expiring within this many days get a warning.
    static let expiryWarningDays = 30

    /// Runs the whole preparation for the file at `path` (as the user gave it).
    ///
    /// - Parameter previous: the configuration in force, on a reload: a listener whose random ticket
    ///   keys it keeps (`TLSServerContext(configuration:previous:)`) resumes sessions across the reload.
    public static func prepare(
        path: String, now: Date = Date(), previous: PreparedConfiguration? = nil
    ) -> PreparationResult {
        let text: String
        switch readConfiguration(path: path) {
        case .success(let contents):
            text = contents
        case .failure(let reason):
            return PreparationResult(
                prepared: nil,
                diagnostics: [.error("cannot read configuration: \(reason)", at: nil, file: path)]
            )
        }
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let directory = (absolute as NSString).deletingLastPathComponent
        let loaded = ConfigurationLoader.load(text: text, path: path, directory: directory)
        // The files are checked even when the configuration has errors, so that one run reports everything.
        var checker = FileChecker(
            path: path, now: now, files: TLSFileSet(secretPaths: FileChecker.secretPaths(of: loaded.listenerFiles))
        )
        for listener in loaded.listenerFiles {
            checker.check(listener)
        }
        guard let configuration = loaded.configuration else {
            return PreparationResult(
                prepared: nil,
                diagnostics: (loaded.diagnostics + checker.diagnostics).sortedByLocation()
                    .limited(to: ConfigurationLoader.maximumDiagnostics),
                unreadableKeys: checker.unreadableKeys
            )
        }
        checker.checkAdmin(configuration.admin, text: text)
        var diagnostics = loaded.diagnostics + checker.diagnostics
        var contexts = Contexts()
        if !diagnostics.containsErrors {
            // Built from what the checks parsed (`checker.files`): no file is read again.
            contexts = makeContexts(configuration, files: &checker.files, previous: previous, path: path)
            diagnostics += contexts.diagnostics
        }
        diagnostics = diagnostics.sortedByLocation().limited(to: ConfigurationLoader.maximumDiagnostics)
        guard !diagnostics.containsErrors else {
            return PreparationResult(prepared: nil, diagnostics: diagnostics, unreadableKeys: checker.unreadableKeys)
        }
        return PreparationResult(
            prepared: PreparedConfiguration(
                configuration: configuration, tlsContexts: contexts.server, backendTLSContexts: contexts.backend,
                certificates: checker.certificates
            ),
            diagnostics: diagnostics
        )
    }

    /// The file's text, or the reason it cannot be read (`strerror` wording). Opened non-blocking and only
    /// when it is a regular file, and read up to `ConfigurationLoader.maximumSize`: `-c /dev/stdin`, a FIFO or
    /// a device cannot stall a reload, nor a huge file exhaust memory.
    static func readConfiguration(path: String) -> Result<String, ReadFailure> {
        let limit = ConfigurationLoader.maximumSize
        switch FileBytes.read(path, limit: limit) {
        case .success(let bytes):
            guard let text = String(validating: bytes, as: UTF8.self) else {
                return .failure(ReadFailure(message: "not valid UTF-8"))
            }
            return .success(text)
        case .failure(.tooLarge):
            return .failure(
                ReadFailure(message: "larger than \(limit >> 20) MiB, the most a configuration may be")
            )
        case .failure(let failure):
            return .failure(ReadFailure(message: failure.description))
        }
    }

    struct ReadFailure: Error, CustomStringConvertible {
        var description: String

        init(message: String) {
            description = message
        }
    }
}

/// The short reason of a TLS error, or the error's description.
func reasonText(_ error: any Error) -> String {
    (error as? TLSError)?.reason ?? "\(error)"
}
