import Foundation
import SecProxyConfig
import SecProxyTLS

/// A configuration that passed every check, with everything the listeners need already built.
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
        var checker = FileChecker(path: path, now: now)
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
        var contexts: [String: TLSServerContext] = [:]
        var backendContexts: [String: TLSClientContext] = [:]
        checker.checkAdmin(configuration.admin, text: text)
        var diagnostics = loaded.diagnostics + checker.diagnostics
        if !diagnostics.containsErrors {
            for listener in configuration.listeners {
                if let backendTLS = listener.backendTLS {
                    do {
                        backendContexts[listener.name] = try TLSClientContext(
                            configuration: clientConfiguration(backendTLS)
                        )
                    } catch {
                        diagnostics.append(
                            .error(
                                "cannot set up backend TLS for listener '\(listener.name)': \(reasonText(error))",
                                at: backendTLS.location, file: path
                            )
                        )
                    }
                }
                guard listener.mode == .tls, let tls = listener.tls else { continue }
                do {
                    contexts[listener.name] = try TLSServerContext(
                        configuration: try serverConfiguration(tls, listener: listener.name),
                        previous: previous?.tlsContexts[listener.name]
                    )
                } catch {
                    diagnostics.append(
                        .error("cannot set up TLS for listener '\(listener.name)': \(reasonText(error))", at: tls.location, file: path)
                    )
                }
            }
        }
        diagnostics = diagnostics.sortedByLocation().limited(to: ConfigurationLoader.maximumDiagnostics)
        guard !diagnostics.containsErrors else {
            return PreparationResult(prepared: nil, diagnostics: diagnostics, unreadableKeys: checker.unreadableKeys)
        }
        return PreparationResult(
            prepared: PreparedConfiguration(
                configuration: configuration, tlsContexts: contexts, backendTLSContexts: backendContexts,
                certificates: checker.certificates
            ),
            diagnostics: diagnostics
        )
    }

    /// Trust roots for backend TLS when `ca` is not set: the system bundle (Debian's ca-certificates).
    static let systemTrustRoots = "/etc/ssl/certs/ca-certificates.crt"

    /// The TLS layer's settings for a listener's `[listener.backend_tls]`.
    static func clientConfiguration(_ settings: BackendTLSSettings) -> TLSClientConfiguration {
        var configuration = TLSClientConfiguration()
        configuration.trustRootsFile = settings.ca?.path ?? systemTrustRoots
        configuration.verifyHostname = settings.serverName.isEmpty ? nil : settings.serverName
        configuration.certificateChainFile = settings.cert?.path
        configuration.privateKeyFile = settings.key?.path
        configuration.sessionResumption = true
        return configuration
    }

    /// The TLS layer's settings for the `[listener.tls]` of listener `listener`.
    static func serverConfiguration(_ tls: TLSSettings, listener: String) throws -> TLSServerConfiguration {
        var configuration = TLSServerConfiguration(certificateChainFile: tls.cert.path, privateKeyFile: tls.key.path)
        configuration.sniCertificates = tls.sni.map {
            TLSSNICertificate(chainFile: $0.cert.path, keyFile: $0.key.path, names: $0.names)
        }
        configuration.minimumVersion = SecProxyTLS.TLSProtocolVersion(tls.minVersion.value)
        configuration.maximumVersion = SecProxyTLS.TLSProtocolVersion(tls.maxVersion.value)
        configuration.cipherList = tls.ciphers.value
        configuration.cipherSuites = tls.ciphersuites.value
        configuration.groups = tls.curves.value
        configuration.alpn = tls.alpn
        configuration.sessionTickets = tls.sessionTickets
        configuration.clientCAFile = tls.clientCA?.path
        configuration.clientCertificateOptional = tls.clientAuth == .optional
        configuration.clientCRLFile = tls.clientCRL?.path
        // Both are part of the session ID context: sessions never cross listeners, and a change of
        // who may connect refuses the sessions from before it.
        configuration.listenerName = listener
        configuration.allowedClients = tls.allowedClients.map {
            switch $0 {
            case .commonName(let name): return "cn:\(name)"
            case .dnsName(let name): return "dns:\(name.lowercased())"
            case .uri(let uri): return "uri:\(uri)"
            }
        }
        configuration.strictSNI = tls.strictSNI
        configuration.ticketKeys = try tls.ticketKeyFile.map { try TLSTicketKey.load(file: $0.path) } ?? []
        configuration.ocspResponseFile = tls.ocspResponse?.path
        return configuration
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

        init(errno code: Int32) {
            description = String(cString: strerror(code))
        }

        init(message: String) {
            description = message
        }
    }
}

extension SecProxyTLS.TLSProtocolVersion {
    init(_ version: SecProxyConfig.TLSProtocolVersion) {
        switch version {
        case .tls12: self = .tls12
        case .tls13: self = .tls13
        }
    }
}

/// The checks that need the file system or OpenSSL, each reported at the key that named the file.
///
/// Every file is opened non-blocking and must be a regular file (`FileBytes`); private keys and ticket keys must
/// be private to the user secproxy runs as.
struct FileChecker {
    let path: String
    let now: Date
    /// The user that owns key files: the one secproxy runs as.
    let user: uid_t
    var diagnostics: [Diagnostic] = []
    var certificates: [CertificateSummary] = []
    /// How many of the errors are key files (private keys, ticket keys) that could not be opened or read.
    private(set) var unreadableKeys = 0

    init(path: String, now: Date, user: uid_t = geteuid()) {
        self.path = path
        self.now = now
        self.user = user
    }

    /// The files of one listener: `[listener.tls]` (certificates, keys, CA, CRL, OCSP, ticket keys, the cipher
    /// strings) and `[listener.backend_tls]`.
    mutating func check(_ listener: ListenerFiles) {
        if let backendTLS = listener.backendTLS {
            check(backendTLS: backendTLS)
        }
        if let tls = listener.tls {
            check(tls: tls, listener: listener.name ?? "")
        }
    }

    mutating func check(tls: TLSSettings, listener: String) {
        checkPair(cert: tls.cert, key: tls.key, listener: listener)
        for entry in tls.sni {
            checkPair(cert: entry.cert, key: entry.key, listener: listener)
        }
        if !tls.ciphers.value.isEmpty, let error = TLSSettingsValidation.validateCipherList(tls.ciphers.value) {
            diagnostics.append(
                .error("invalid cipher list '\(tls.ciphers.value)': \(error.reason)", at: tls.ciphers.location, file: path)
            )
        }
        if !tls.ciphersuites.value.isEmpty,
            let error = TLSSettingsValidation.validateCipherSuites(tls.ciphersuites.value)
        {
            diagnostics.append(
                .error(
                    "invalid TLS 1.3 cipher suites '\(tls.ciphersuites.value)': \(error.reason)",
                    at: tls.ciphersuites.location, file: path
                )
            )
        }
        if !tls.curves.value.isEmpty, let error = TLSSettingsValidation.validateGroups(tls.curves.value) {
            diagnostics.append(
                .error("invalid curves '\(tls.curves.value)': \(error.reason)", at: tls.curves.location, file: path)
            )
        }
        if let ca = tls.clientCA, opened(ca, what: "client CA file") != nil {
            if let error = TLSSettingsValidation.validateCAFile(ca.path) {
                diagnostics.append(
                    .error("client CA file '\(ca.written)' does not parse: \(error.reason)", at: ca.location, file: path)
                )
            }
        }
        if let ticketKeys = tls.ticketKeyFile, let info = opened(ticketKeys, what: "ticket key file", isKey: true) {
            checkPrivate(ticketKeys, info, what: "ticket key file")
            if let error = TLSSettingsValidation.validateTicketKeyFile(ticketKeys.path) {
                diagnostics.append(
                    .error("ticket key file '\(ticketKeys.written)' is invalid: \(error.reason)", at: ticketKeys.location, file: path)
                )
            }
        }
        if let ocsp = tls.ocspResponse, opened(ocsp, what: "OCSP response file") != nil {
            switch TLSSettingsValidation.checkOCSPResponseFile(ocsp.path, certificateChainFile: tls.cert.path, now: now) {
            case .good:
                break
            case .notStapled(let reason):
                diagnostics.append(.warning("OCSP response file '\(ocsp.written)' \(reason)", at: ocsp.location, file: path))
            case .invalid(let error):
                diagnostics.append(
                    .error("OCSP response file '\(ocsp.written)' is invalid: \(error.reason)", at: ocsp.location, file: path)
                )
            }
        }
        if let crl = tls.clientCRL, opened(crl, what: "CRL file") != nil {
            if let error = TLSSettingsValidation.validateCRLFile(crl.path) {
                diagnostics.append(
                    .error("CRL file '\(crl.written)' does not parse: \(error.reason)", at: crl.location, file: path)
                )
            }
        }
    }

    /// `[admin] listen` off loopback: a warning at `listen` (the endpoint is plaintext and unauthenticated).
    mutating func checkAdmin(_ admin: AdminSettings?, text: String) {
        guard let listen = admin?.listen, !Self.isLoopback(listen.host) else { return }
        // The parsed settings carry no location for `listen`: find the key in the file itself.
        let location = TOMLParser.parse(text).root["admin"].flatMap { entry -> SourceLocation? in
            guard case .table(let table) = entry.node.value else { return nil }
            return table["listen"]?.keyLocation
        }
        diagnostics.append(
            .warning(
                "admin endpoint '\(listen.text)' is not on a loopback address: /metrics and /healthz are plain HTTP "
                    + "without authentication; listen on 127.0.0.1 or [::1], or firewall the port",
                at: location, file: path
            )
        )
    }

    /// 127.0.0.0/8, ::1 and localhost.
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".")
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    /// `[listener.backend_tls]`: the CA bundle parses, a client certificate matches its key.
    mutating func check(backendTLS: BackendTLSSettings) {
        if let ca = backendTLS.ca, opened(ca, what: "backend CA file") != nil {
            if let error = TLSSettingsValidation.validateCAFile(ca.path) {
                diagnostics.append(
                    .error("backend CA file '\(ca.written)' does not parse: \(error.reason)", at: ca.location, file: path)
                )
            }
        }
        if let cert = backendTLS.cert, let key = backendTLS.key {
            checkPair(cert: cert, key: key, listener: nil)
        }
    }

    private mutating func checkPair(cert: FileReference, key: FileReference, listener: String?) {
        var chain: [TLSCertificate] = []
        if opened(cert, what: "certificate file") != nil {
            do {
                chain = try TLSCertificate.loadChain(file: cert.path)
            } catch {
                diagnostics.append(
                    .error(
                        "certificate file '\(cert.written)' is not a PEM certificate: \(reasonText(error))",
                        at: cert.location, file: path
                    )
                )
            }
        }
        if let leaf = chain.first {
            let notAfter = leaf.notAfter
            let name = leaf.displayName
            if let listener {
                // Server certificates only: they are what the summary and the expiry metric count.
                certificates.append(CertificateSummary(listener: listener, name: name, notAfter: notAfter))
            }
            let day = Self.day(notAfter)
            if notAfter <= now {
                diagnostics.append(
                    .error("certificate '\(cert.written)' (\(name)) expired on \(day)", at: cert.location, file: path)
                )
            } else {
                let days = Int(notAfter.timeIntervalSince(now) / 86400)
                if days < Preparation.expiryWarningDays {
                    diagnostics.append(
                        .warning(
                            "certificate '\(cert.written)' (\(name)) expires on \(day), in \(days) days",
                            at: cert.location, file: path
                        )
                    )
                }
            }
        }
        guard let info = opened(key, what: "private key file", isKey: true) else { return }
        checkPrivate(key, info, what: "private key file")
        let privateKey: TLSPrivateKey
        do {
            privateKey = try TLSPrivateKey.load(file: key.path)
        } catch {
            diagnostics.append(
                .error("private key file '\(key.written)' is not a PEM private key: \(reasonText(error))", at: key.location, file: path)
            )
            return
        }
        if let leaf = chain.first, !privateKey.matches(leaf) {
            diagnostics.append(
                .error(
                    "private key '\(key.written)' does not match certificate '\(cert.written)'",
                    at: key.location, file: path
                )
            )
        }
    }

    /// Opens `file` the way the TLS layer will read it (non-blocking, a regular file) and returns its `fstat`;
    /// reports why not when it cannot.
    /// - Parameters:
    ///   - file: the file and the key that named it.
    ///   - what: how messages name it, "private key file".
    ///   - isKey: counts an open failure as "cannot read a key" (`PreparationResult.Failure.cannotReadKey`).
    private mutating func opened(_ file: FileReference, what: String, isKey: Bool = false) -> stat? {
        let reason: String
        switch FileBytes.statRegularFile(file.path) {
        case .success(let info):
            return info
        case .failure(.system(let code)):
            reason = code == ENOENT ? "does not exist" : "cannot be read: \(String(cString: strerror(code)))"
            if isKey { unreadableKeys += 1 }
        case .failure(let failure):
            reason = "is \(failure)"
        }
        diagnostics.append(.error("\(what) '\(file.written)' \(reason)", at: file.location, file: path))
        return nil
    }

    /// Warns when a key file is not private to the user secproxy runs as: any group or other permission bit
    /// (a key that others may read, or replace, is not secret), or another owner (who can change the mode).
    private mutating func checkPrivate(_ file: FileReference, _ info: stat, what: String) {
        let mode = info.st_mode & 0o777
        if mode & 0o077 != 0 {
            let bits = String(mode, radix: 8)
            let others = mode & 0o007 != 0 ? "other users" : "its group"
            diagnostics.append(
                .warning(
                    "\(what) '\(file.written)' is accessible to \(others) (mode 0\(bits)); run chmod 600 on it",
                    at: file.location, file: path
                )
            )
        }
        if info.st_uid != user {
            diagnostics.append(
                .warning(
                    "\(what) '\(file.written)' is owned by \(Self.userName(info.st_uid)), but secproxy runs as "
                        + "\(Self.userName(user)); run chown on it",
                    at: file.location, file: path
                )
            )
        }
    }

    /// "'secproxy' (uid 998)", or "uid 998" for a user without a name.
    static func userName(_ uid: uid_t) -> String {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        let found = getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0 && result != nil
        guard found, let name = entry.pw_name.map({ String(cString: $0) }) else { return "uid \(uid)" }
        return "'\(name)' (uid \(uid))"
    }

    static func day(_ date: Date) -> String {
        UTCTime(seconds: time_t(date.timeIntervalSince1970)).day
    }
}

/// The short reason of a TLS error, or the error's description.
func reasonText(_ error: any Error) -> String {
    (error as? TLSError)?.reason ?? "\(error)"
}
