/// `[listener.tls]` and `[[listener.tls.sni]]`.
extension ConfigurationReader {
    /// Reads `[listener.tls]`; `nil` when `cert` or `key` is missing (reported at its header) or another
    /// required part is invalid.
    mutating func readTLS(_ table: CheckedTable) -> TLSSettings? {
        let cert = requiredFile("cert", in: table)
        let key = requiredFile("key", in: table)

        let minVersion =
            choice("min_version", in: table, of: TLSProtocolVersion.self)
            ?? Located(ConfigurationDefaults.minTLSVersion, at: table.location)
        let maxVersion =
            choice("max_version", in: table, of: TLSProtocolVersion.self)
            ?? Located(ConfigurationDefaults.maxTLSVersion, at: table.location)
        if maxVersion.value < minVersion.value {
            error(
                "max_version \(maxVersion.value.rawValue) is lower than min_version \(minVersion.value.rawValue)",
                at: table.contains("max_version") ? maxVersion.location : minVersion.location
            )
        }
        let ciphers = string("ciphers", in: table) ?? Located(ConfigurationDefaults.ciphers, at: table.location)
        let ciphersuites =
            string("ciphersuites", in: table) ?? Located(ConfigurationDefaults.ciphersuites, at: table.location)
        var curves = string("curves", in: table) ?? Located(ConfigurationDefaults.curves, at: table.location)
        if curves.value.isEmpty { curves.value = ConfigurationDefaults.curves }

        let alpn = alpnProtocols(in: table)
        let sessionTickets = boolean("session_tickets", in: table) ?? true
        let ticketKeyFile = file("ticket_key_file", in: table)
        if let ticketKeyFile, !sessionTickets {
            warning("'ticket_key_file' is ignored because session_tickets = false", at: ticketKeyFile.location)
        }

        let clientCA = file("client_ca", in: table)
        let clientAuth = choice("client_auth", in: table, of: ClientAuthMode.self)
        let clientCRL = file("client_crl", in: table)
        let allowedClients = allowedClients(in: table)
        if clientCA == nil {
            if let clientAuth {
                warning("'client_auth' is ignored because 'client_ca' is not set", at: clientAuth.location)
            }
            if let clientCRL {
                warning("'client_crl' is ignored because 'client_ca' is not set", at: clientCRL.location)
            }
            if let allowedClients, !allowedClients.value.isEmpty {
                error(
                    "'allowed_clients' needs 'client_ca': without it no client certificate is requested",
                    at: allowedClients.location
                )
            }
        }
        let strictSNI = boolean("strict_sni", in: table) ?? false
        let ocspResponse = file("ocsp_response", in: table)

        var sni: [SNICertificateSettings] = []
        var sniComplete = true
        for sniTable in table.tables("sni") {
            if let entry = readSNI(open(sniTable, as: .sni)) { sni.append(entry) } else { sniComplete = false }
        }

        guard let cert, let key, sniComplete else { return nil }
        return TLSSettings(
            location: table.location,
            cert: cert,
            key: key,
            minVersion: minVersion,
            maxVersion: maxVersion,
            ciphers: ciphers,
            ciphersuites: ciphersuites,
            curves: curves,
            alpn: alpn,
            sessionTickets: sessionTickets,
            ticketKeyFile: ticketKeyFile,
            clientCA: clientCA,
            clientAuth: clientAuth?.value ?? .require,
            clientCRL: clientCRL,
            allowedClients: allowedClients?.value.compactMap(Self.clientMatcher) ?? [],
            strictSNI: strictSNI,
            ocspResponse: ocspResponse,
            sni: sni
        )
    }

    /// A required file key of a TLS table: missing is reported at the table's header.
    private mutating func requiredFile(_ key: String, in table: CheckedTable) -> FileReference? {
        guard table.contains(key) else {
            error("\(table.schema.displayName) is missing required key '\(key)'", at: table.location)
            return nil
        }
        return file(key, in: table, required: true)
    }

    /// `alpn`: each protocol name 1...255 bytes (the length prefix on the wire is one byte).
    private mutating func alpnProtocols(in table: CheckedTable) -> [String] {
        guard let alpn = stringArray("alpn", in: table) else { return [] }
        for name in alpn.value {
            let length = name.utf8.count
            if length == 0 {
                error("invalid ALPN protocol name in 'alpn': it is empty", at: alpn.location)
            } else if length > 255 {
                error(
                    "invalid ALPN protocol name in 'alpn': it is \(length) bytes long, at most 255 are allowed",
                    at: alpn.location
                )
            }
        }
        return alpn.value
    }

    /// `allowed_clients`, each entry checked.
    private mutating func allowedClients(in table: CheckedTable) -> Located<[String]>? {
        guard let list = stringArray("allowed_clients", in: table) else { return nil }
        for entry in list.value where Self.clientMatcher(entry) == nil {
            error(
                "invalid entry '\(entry)' in 'allowed_clients': expected \"cn:NAME\", \"dns:NAME\" or \"uri:URI\"",
                at: list.location
            )
        }
        return list
    }

    /// Parses "cn:…", "dns:…" or "uri:…" with a non-empty value; DNS names are kept lowercased
    /// (they match case-insensitively).
    static func clientMatcher(_ text: String) -> ClientMatcher? {
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let value = String(text[text.index(after: colon)...])
        guard !value.isEmpty else { return nil }
        switch text[..<colon] {
        case "cn": return .commonName(value)
        case "dns": return .dnsName(value.lowercased())
        case "uri": return .uri(value)
        default: return nil
        }
    }

    /// One `[[listener.tls.sni]]`: `cert` and `key` required, `names` optional but not empty when written.
    private mutating func readSNI(_ table: CheckedTable) -> SNICertificateSettings? {
        let cert = requiredFile("cert", in: table)
        let key = requiredFile("key", in: table)
        var names: [String]?
        var namesValid = true
        if let written = stringArray("names", in: table) {
            if written.value.isEmpty {
                error(
                    "'names' is empty; remove it to use the certificate's DNS names",
                    at: written.location
                )
                namesValid = false
            }
            for name in written.value {
                if let reason = AddressParser.dnsNameProblem(Substring(name), allowWildcard: true) {
                    error("invalid server name '\(name)' in 'names': \(reason)", at: written.location)
                    namesValid = false
                }
            }
            names = written.value.map { $0.lowercased() }
        }
        guard let cert, let key, namesValid else { return nil }
        return SNICertificateSettings(location: table.location, cert: cert, key: key, names: names)
    }
}
