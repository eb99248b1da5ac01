import Foundation
import SecProxyConfig
import SecProxyTLS

/// The checks that need the file system or OpenSSL, each reported at the key that named the file.
///
/// Every file is read through `files`, once (non-blocking, regular files only: `TLSFileSet`), and each
/// diagnostic is computed from what was parsed there; the TLS contexts are then built from the same parsed
/// objects (`Preparation.prepare`). Private keys and ticket keys must be private to the user secproxy runs as.
struct FileChecker {
    let path: String
    let now: Date
    /// The user that owns key files: the one secproxy runs as.
    let user: uid_t
    /// Every file checked so far, read and parsed.
    var files: TLSFileSet
    var diagnostics: [Diagnostic] = []
    var certificates: [CertificateSummary] = []
    /// How many of the errors are key files (private keys, ticket keys) that could not be opened or read.
    private(set) var unreadableKeys = 0

    /// - Parameter files: where the files are read; it should know every key file of the configuration
    ///   (`secretPaths(of:)`), so that a file named both as a certificate and as a key is read as a secret.
    init(path: String, now: Date, user: uid_t = geteuid(), files: TLSFileSet = TLSFileSet()) {
        self.path = path
        self.now = now
        self.user = user
        self.files = files
    }

    /// The files the listeners name as private keys or ticket keys.
    static func secretPaths(of listeners: [ListenerFiles]) -> Set<String> {
        var paths: Set<String> = []
        for listener in listeners {
            if let tls = listener.tls {
                paths.insert(tls.key.path)
                paths.formUnion(tls.sni.map(\.key.path))
                if let ticketKeys = tls.ticketKeyFile { paths.insert(ticketKeys.path) }
            }
            if let key = listener.backendTLS?.key { paths.insert(key.path) }
        }
        return paths
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
        if let ca = tls.clientCA, opened(ca, what: "client CA file") != nil,
            case .failure(let error) = files.certificateAuthorities(ca.path)
        {
            diagnostics.append(
                .error("client CA file '\(ca.written)' does not parse: \(error.reason)", at: ca.location, file: path)
            )
        }
        if let ticketKeys = tls.ticketKeyFile, let info = opened(ticketKeys, what: "ticket key file", isKey: true) {
            checkPrivate(ticketKeys, info, what: "ticket key file")
            if case .failure(let error) = files.ticketKeys(ticketKeys.path) {
                diagnostics.append(
                    .error("ticket key file '\(ticketKeys.written)' is invalid: \(error.reason)", at: ticketKeys.location, file: path)
                )
            }
        }
        if let ocsp = tls.ocspResponse, opened(ocsp, what: "OCSP response file") != nil {
            // Checked against the certificate it is stapled for; when that cannot be read (reported at `cert`),
            // only its structure.
            let chain = try? files.certificateChain(tls.cert.path).get()
            let check: TLSSettingsValidation.OCSPResponseCheck
            switch files.ocspResponse(ocsp.path, for: chain) {
            case .success(let response): check = TLSSettingsValidation.check(response, at: now)
            case .failure(let error): check = .invalid(error)
            }
            switch check {
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
        if let crl = tls.clientCRL, opened(crl, what: "CRL file") != nil,
            case .failure(let error) = files.revocationList(crl.path)
        {
            diagnostics.append(
                .error("CRL file '\(crl.written)' does not parse: \(error.reason)", at: crl.location, file: path)
            )
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
        if let ca = backendTLS.ca, opened(ca, what: "backend CA file") != nil,
            case .failure(let error) = files.certificateAuthorities(ca.path)
        {
            diagnostics.append(
                .error("backend CA file '\(ca.written)' does not parse: \(error.reason)", at: ca.location, file: path)
            )
        }
        if let cert = backendTLS.cert, let key = backendTLS.key {
            checkPair(cert: cert, key: key, listener: nil)
        }
    }

    private mutating func checkPair(cert: FileReference, key: FileReference, listener: String?) {
        var chain: [TLSCertificate] = []
        if opened(cert, what: "certificate file") != nil {
            switch files.certificateChain(cert.path) {
            case .success(let parsed):
                chain = parsed
            case .failure(let error):
                diagnostics.append(
                    .error(
                        "certificate file '\(cert.written)' is not a PEM certificate: \(error.reason)",
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
        switch files.privateKey(key.path) {
        case .success(let parsed):
            privateKey = parsed
        case .failure(let error):
            diagnostics.append(
                .error("private key file '\(key.written)' is not a PEM private key: \(error.reason)", at: key.location, file: path)
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

    /// Opens and reads `file` (once: `files` keeps what it read) and returns the `fstat` of the descriptor it was
    /// read from; reports why not when it cannot be opened.
    /// - Parameters:
    ///   - file: the file and the key that named it.
    ///   - what: how messages name it, "private key file".
    ///   - isKey: counts an open failure as "cannot read a key" (`PreparationResult.Failure.cannotReadKey`).
    private mutating func opened(_ file: FileReference, what: String, isKey: Bool = false) -> stat? {
        let reason: String
        switch files.open(file.path, secret: isKey) {
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
