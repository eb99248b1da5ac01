/// `[[listener]]` and its sub-tables other than `[listener.tls]`.
extension ConfigurationReader {
    /// Reads one `[[listener]]`.
    /// - Parameters:
    ///   - table: the listener table, already opened.
    ///   - number: its 1-based position, naming it in messages when it has no valid name.
    ///   - defaults: `[defaults]`, which the listener's own keys override.
    ///   - names: names of the listeners before it, with their `name` keys; this one's is added.
    ///   - bindings: listening addresses seen so far; this one's is added.
    mutating func readListener(
        _ table: CheckedTable,
        number: Int,
        defaults: ConnectionSettings,
        names: inout [String: SourceLocation],
        bindings: inout [Binding]
    ) -> ListenerConfiguration? {
        let name = listenerName(in: table, number: number, names: &names)
        let owner = name.map { "listener '\($0)'" } ?? "listener #\(number)"

        var listen: Located<SocketAddressSpec>?
        if table.contains("listen") {
            listen = listenAddress("listen", in: table)
            if let listen { bindings.append(Binding(owner: owner, address: listen.value, location: listen.location)) }
        } else {
            error("\(owner) is missing required key 'listen'", at: table.location)
        }

        // `nil` when `mode` is invalid (reported): the checks that depend on it are skipped.
        let mode: ListenerMode? =
            table.contains("mode")
            ? choice("mode", in: table, of: ListenerMode.self)?.value : ConfigurationDefaults.listenerMode
        let backends = backends(in: table, owner: owner)
        let balance = choice("balance", in: table, of: BalanceStrategy.self)?.value ?? .roundRobin
        let proxyProtocol = choice("proxy_protocol", in: table, of: ProxyProtocolVersion.self)?.value ?? .off
        let acceptProxyProtocol = boolean("accept_proxy_protocol", in: table) ?? false
        let trusted = proxyProtocolTrusted(in: table)
        if acceptProxyProtocol, trusted == nil, let key = table.entry("accept_proxy_protocol") {
            warning(
                "accept_proxy_protocol = true with no 'proxy_protocol_trusted': any client can claim any address; "
                    + "list the addresses of the load balancers that send PROXY headers",
                at: key.keyLocation
            )
        }
        let settings = readConnectionSettings(table, base: defaults)

        var tls: TLSSettings?
        let tlsTable = table.subtable("tls").map { open($0, as: .tls) }
        switch (mode, tlsTable) {
        case (.tls, nil):
            if !table.contains("tls") {  // a wrongly typed `tls` was reported already
                let defaulted = table.contains("mode") ? "" : " (the default)"
                error(
                    "\(owner) has mode = \"tls\"\(defaulted) but no [listener.tls] table; add one with 'cert' and "
                        + "'key', or set mode = \"plain\"",
                    at: table.location
                )
            }
        case (.plain, let tlsTable?):
            warning("[listener.tls] is ignored because \(owner) has mode = \"plain\"", at: tlsTable.location)
            _ = readTLS(tlsTable)  // still checked, so that switching to "tls" later holds no surprise
        case (_, let tlsTable?):
            tls = readTLS(tlsTable)
        case (_, nil):
            break
        }

        var routes: [RouteSettings] = []
        var routesComplete = true
        var routeNames: [String: SourceLocation] = [:]
        for routeTable in table.tables("route") {
            let checked = open(routeTable, as: .route)
            if mode == .plain {
                warning(
                    "[[listener.route]] is ignored because \(owner) has mode = \"plain\" (routes need TLS SNI)",
                    at: checked.location
                )
            }
            if let route = readRoute(checked, names: &routeNames) {
                routes.append(route)
            } else {
                routesComplete = false
            }
        }

        let backendTLS = table.subtable("backend_tls").flatMap { readBackendTLS(open($0, as: .backendTLS)) }
        let healthCheck = table.subtable("health_check").map { readHealthCheck(open($0, as: .healthCheck)) }

        listenerFiles.append(ListenerFiles(name: name, tls: tls, backendTLS: backendTLS))

        guard let name, let listen, let mode, let backends, mode == .plain || tls != nil, routesComplete else {
            return nil
        }
        return ListenerConfiguration(
            name: name,
            location: table.location,
            listen: listen,
            mode: mode,
            backends: backends,
            balance: balance,
            proxyProtocol: proxyProtocol,
            acceptProxyProtocol: acceptProxyProtocol,
            proxyProtocolTrusted: trusted ?? [],
            settings: settings,
            tls: mode == .tls ? tls : nil,
            routes: mode == .tls ? routes : [],
            backendTLS: backendTLS,
            healthCheck: healthCheck
        )
    }

    /// `proxy_protocol_trusted`, each entry checked; `nil` when it is absent or empty. An entry that an
    /// earlier one already covers is a warning (a sign that one of them is not what was meant).
    private mutating func proxyProtocolTrusted(in table: CheckedTable) -> [AddressRange]? {
        let key = "proxy_protocol_trusted"
        guard let list = stringArray(key, in: table), !list.value.isEmpty else { return nil }
        var ranges: [AddressRange] = []
        for text in list.value {
            switch AddressRange.parse(text) {
            case .success(let range):
                if let wider = ranges.first(where: { $0.covers(range) }) {
                    let what = wider == range ? "is listed more than once" : "is already covered by '\(wider)'"
                    warning("'\(text)' in '\(key)' \(what)", at: list.location)
                } else {
                    ranges.append(range)
                }
            case .failure(let problem):
                error("invalid entry '\(text)' in '\(key)': \(problem.reason)", at: list.location)
            }
        }
        return ranges
    }

    /// The listener's `name`: required, `[A-Za-z0-9_-]+`, unique (a duplicate is reported at its own key).
    private mutating func listenerName(
        in table: CheckedTable,
        number: Int,
        names: inout [String: SourceLocation]
    ) -> String? {
        guard table.contains("name") else {
            error("listener #\(number) is missing required key 'name'", at: table.location)
            return nil
        }
        guard let name = string("name", in: table) else { return nil }
        let allowed = name.value.unicodeScalars.allSatisfy {
            $0.isASCII
                && (("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                    || $0 == "_" || $0 == "-")
        }
        guard !name.value.isEmpty, allowed else {
            error("invalid listener name '\(name.value)': use only letters, digits, '_' and '-'", at: name.location)
            return nil
        }
        if let first = names[name.value] {
            error("duplicate listener name '\(name.value)' (first used on line \(first.line))", at: name.location)
            return nil
        }
        names[name.value] = name.location
        return name.value
    }

    /// One `[[listener.route]]`: `sni` (exact or "*.example.org", unique within the listener) and `backends`.
    private mutating func readRoute(_ table: CheckedTable, names: inout [String: SourceLocation]) -> RouteSettings? {
        var sni: String?
        if !table.contains("sni") {
            error("[[listener.route]] is missing required key 'sni'", at: table.location)
        } else if let written = string("sni", in: table) {
            if let reason = AddressParser.dnsNameProblem(Substring(written.value), allowWildcard: true) {
                error("invalid server name '\(written.value)' for 'sni': \(reason)", at: written.location)
            } else {
                let lowered = written.value.lowercased()
                if let first = names[lowered] {
                    error(
                        "duplicate route for SNI '\(written.value)' (first on line \(first.line))",
                        at: written.location
                    )
                } else {
                    names[lowered] = written.location
                    sni = lowered
                }
            }
        }
        let backends = backends(in: table, owner: "[[listener.route]]")
        guard let sni, let backends else { return nil }
        return RouteSettings(location: table.location, sni: sni, backends: backends)
    }

    /// `[listener.backend_tls]`; `nil` when a client certificate is given without its key or the reverse.
    private mutating func readBackendTLS(_ table: CheckedTable) -> BackendTLSSettings? {
        let ca = file("ca", in: table)
        let serverName = string("server_name", in: table)
        if serverName?.value.isEmpty ?? !table.contains("server_name") {
            warning(
                "no server name check for backend TLS: set 'server_name' to the name in the backends' certificates",
                at: serverName?.location ?? table.location
            )
        }
        let cert = file("cert", in: table)
        let key = file("key", in: table)
        var complete = true
        if cert != nil, key == nil {
            error(
                "[listener.backend_tls] has 'cert' but no 'key'; the client certificate needs its key",
                at: table.location
            )
            complete = false
        }
        if key != nil, cert == nil {
            error(
                "[listener.backend_tls] has 'key' but no 'cert'; the key needs its client certificate",
                at: table.location
            )
            complete = false
        }
        guard complete else { return nil }
        return BackendTLSSettings(
            location: table.location,
            ca: ca,
            serverName: serverName?.value ?? "",
            cert: cert,
            key: key
        )
    }

    /// `[listener.health_check]`.
    private mutating func readHealthCheck(_ table: CheckedTable) -> HealthCheckSettings {
        var settings = HealthCheckSettings(location: table.location)
        if let interval = duration("interval", in: table, allowZero: false) { settings.interval = interval }
        if let timeout = duration("timeout", in: table, allowZero: false) { settings.timeout = timeout }
        if let fall = integer("fall", in: table, range: 1...Int.max) { settings.fall = fall }
        if let rise = integer("rise", in: table, range: 1...Int.max) { settings.rise = rise }
        return settings
    }
}
