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
    public var prepared: PreparedConfiguration?
    public var diagnostics: [Diagnostic]
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
        guard let configuration = loaded.configuration else {
            return PreparationResult(prepared: nil, diagnostics: loaded.diagnostics)
        }
        var checker = FileChecker(path: path, now: now)
        var contexts: [String: TLSServerContext] = [:]
        var backendContexts: [String: TLSClientContext] = [:]
        for listener in configuration.listeners {
            if let backendTLS = listener.backendTLS {
                checker.check(backendTLS: backendTLS)
            }
            guard listener.mode == .tls, let tls = listener.tls else { continue }
            checker.check(tls: tls, listener: listener.name)
        }
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
        diagnostics = diagnostics.sortedByLocation()
        guard !diagnostics.containsErrors else {
            return PreparationResult(prepared: nil, diagnostics: diagnostics)
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

    /// The file's text, or the reason it cannot be read (`strerror` wording).
    static func readConfiguration(path: String) -> Result<String, ReadFailure> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(ReadFailure(errno: errno)) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(ReadFailure(errno: errno))
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > 16 * 1024 * 1024 { return .failure(ReadFailure(message: "file is larger than 16 MiB")) }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return .failure(ReadFailure(message: "not valid UTF-8"))
        }
        return .success(text)
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
struct FileChecker {
    let path: String
    let now: Date
    var diagnostics: [Diagnostic] = []
    var certificates: [CertificateSummary] = []

    init(path: String, now: Date) {
        self.path = path
        self.now = now
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
        if let ca = tls.clientCA, readable(ca, what: "client CA file") {
            if let error = TLSSettingsValidation.validateCAFile(ca.path) {
                diagnostics.append(
                    .error("client CA file '\(ca.written)' does not parse: \(error.reason)", at: ca.location, file: path)
                )
            }
        }
        if let ticketKeys = tls.ticketKeyFile, readable(ticketKeys, what: "ticket key file") {
            var info = stat()
            if stat(ticketKeys.path, &info) == 0, info.st_mode & S_IROTH != 0 {
                diagnostics.append(
                    .warning(
                        "ticket key file '\(ticketKeys.written)' is readable by other users; run chmod 600 on it",
                        at: ticketKeys.location, file: path
                    )
                )
            }
            if let error = TLSSettingsValidation.validateTicketKeyFile(ticketKeys.path) {
                diagnostics.append(
                    .error("ticket key file '\(ticketKeys.written)' is invalid: \(error.reason)", at: ticketKeys.location, file: path)
                )
            }
        }
        if let ocsp = tls.ocspResponse, readable(ocsp, what: "OCSP response file") {
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
        if let crl = tls.clientCRL, readable(crl, what: "CRL file") {
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
        if let ca = backendTLS.ca, readable(ca, what: "backend CA file") {
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
        if readable(cert, what: "certificate file") {
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
        guard readable(key, what: "private key file") else { return }
        var info = stat()
        if stat(key.path, &info) == 0, info.st_mode & S_IROTH != 0 {
            let mode = String(info.st_mode & 0o777, radix: 8)
            diagnostics.append(
                .warning(
                    "private key file '\(key.written)' is readable by other users (mode 0\(mode)); run chmod 600 on it",
                    at: key.location, file: path
                )
            )
        }
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

    /// Reports a missing or unreadable file; true when it can be read.
    private mutating func readable(_ file: FileReference, what: String) -> Bool {
        var info = stat()
        guard stat(file.path, &info) == 0 else {
            let reason = errno == ENOENT ? "does not exist" : "cannot be read: \(String(cString: strerror(errno)))"
            diagnostics.append(.error("\(what) '\(file.written)' \(reason)", at: file.location, file: path))
            return false
        }
        if info.st_mode & S_IFMT == S_IFDIR {
            diagnostics.append(.error("\(what) '\(file.written)' is a directory", at: file.location, file: path))
            return false
        }
        guard access(file.path, R_OK) == 0 else {
            diagnostics.append(
                .error(
                    "\(what) '\(file.written)' cannot be read: \(String(cString: strerror(errno)))",
                    at: file.location, file: path
                )
            )
            return false
        }
        return true
    }

    static func day(_ date: Date) -> String {
        UTCTime(seconds: time_t(date.timeIntervalSince1970)).day
    }
}

/// The short reason of a TLS error, or the error's description.
func reasonText(_ error: any Error) -> String {
    (error as? TLSError)?.reason ?? "\(error)"
}
