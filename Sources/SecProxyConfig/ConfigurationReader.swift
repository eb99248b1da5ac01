/// Walks a parsed TOML document and builds the model, collecting a `Diagnostic` for every problem
/// instead of stopping at the first. `ConfigurationLoader.load` is its only user.
///
/// Readers return `nil` only when a required part cannot be built; an invalid optional value is reported
/// and replaced by its default, so that checking goes on (the loader drops the configuration anyway when
/// any error was reported).
struct ConfigurationReader {
    /// The configuration path as the user gave it.
    let path: String
    /// The configuration's folder, against which relative paths are resolved.
    let directory: String
    /// Everything reported so far, in the order found.
    private(set) var diagnostics: [Diagnostic] = []
    /// The file settings of every listener read so far, complete or not.
    var listenerFiles: [ListenerFiles] = []

    init(path: String, directory: String) {
        self.path = path
        self.directory = directory
    }

    mutating func error(_ message: String, at location: SourceLocation) {
        diagnostics.append(.error(message, at: location, file: path))
    }

    mutating func warning(_ message: String, at location: SourceLocation) {
        diagnostics.append(.warning(message, at: location, file: path))
    }

    /// Reads the whole document.
    /// - Parameter root: the document's root table.
    mutating func read(_ root: TOMLTable) -> ProxyConfiguration? {
        let top = open(root, as: .root)
        let server = top.subtable("server").map { readServer(open($0, as: .server)) } ?? ServerSettings()
        let adminTable = top.subtable("admin").map { open($0, as: .admin) }
        let admin = adminTable.flatMap { readAdmin($0) }
        let defaults =
            top.subtable("defaults").map { readConnectionSettings(open($0, as: .defaults), base: ConnectionSettings()) }
            ?? ConnectionSettings()

        let listenerTables = top.tables("listener")
        // A wrongly typed `listener` was already reported by `open`.
        if listenerTables.isEmpty, !top.contains("listener") || top.entry("listener") != nil {
            error("no [[listener]] defined", at: SourceLocation(line: 1, column: 1))
        }
        var bindings: [Binding] = []
        if let adminTable, let listen = adminTable.entry("listen"), let address = admin?.listen {
            bindings.append(Binding(owner: "the [admin] listener", address: address, location: listen.keyLocation))
        }
        var names: [String: SourceLocation] = [:]
        var listeners: [ListenerConfiguration] = []
        var complete = true
        for (index, table) in listenerTables.enumerated() {
            let listener = readListener(
                open(table, as: .listener),
                number: index + 1,
                defaults: defaults,
                names: &names,
                bindings: &bindings
            )
            if let listener { listeners.append(listener) } else { complete = false }
        }
        checkOverlaps(bindings)

        guard complete else { return nil }
        return ProxyConfiguration(
            path: path,
            directory: directory,
            server: server,
            admin: admin,
            listeners: listeners
        )
    }

    /// A listening address and who owns it, for the overlap check.
    struct Binding {
        /// "listener 'web'" or "the [admin] listener".
        var owner: String
        var address: SocketAddressSpec
        /// The `listen` key.
        var location: SourceLocation
    }

    /// Reports every listening address that overlaps one written earlier in the file, at the later `listen` key.
    private mutating func checkOverlaps(_ bindings: [Binding]) {
        let ordered = bindings.enumerated().sorted { a, b in
            a.element.location == b.element.location ? a.offset < b.offset : a.element.location < b.element.location
        }.map(\.element)
        for (index, binding) in ordered.enumerated() {
            guard let earlier = ordered[..<index].first(where: { AddressParser.overlap($0.address, binding.address) })
            else { continue }
            let line = earlier.location.line
            if earlier.address.text == binding.address.text {
                error(
                    "address '\(binding.address)' is already used by \(earlier.owner) on line \(line)",
                    at: binding.location
                )
            } else {
                error(
                    "address '\(binding.address)' overlaps \(earlier.owner) on line \(line) ('\(earlier.address)')",
                    at: binding.location
                )
            }
        }
    }

    private mutating func readServer(_ table: CheckedTable) -> ServerSettings {
        var settings = ServerSettings()
        if let workers = integer("workers", in: table, range: 0...ConfigurationDefaults.maximumWorkers) {
            settings.workers = workers
        }
        if let maxConnections = integer("max_connections", in: table, range: 1...Int.max) {
            settings.maxConnections = maxConnections
        }
        if let drain = duration("drain_timeout", in: table, allowZero: true) { settings.drainTimeout = drain }
        if let format = choice("log_format", in: table, of: LogFormat.self) { settings.logFormat = format.value }
        if let level = choice("log_level", in: table, of: LogLevel.self) { settings.logLevel = level.value }
        if let watch = boolean("watch_files", in: table) { settings.watchFiles = watch }
        return settings
    }

    private mutating func readAdmin(_ table: CheckedTable) -> AdminSettings? {
        guard table.contains("listen") else {
            error("[admin] is missing required key 'listen'", at: table.location)
            return nil
        }
        return listenAddress("listen", in: table).map { AdminSettings(listen: $0.value) }
    }

    /// `base` with the `[defaults]` keys that `table` sets.
    /// - Parameters:
    ///   - table: `[defaults]` or a `[[listener]]` (whose keys override the defaults).
    ///   - base: the settings to start from.
    mutating func readConnectionSettings(_ table: CheckedTable, base: ConnectionSettings) -> ConnectionSettings {
        var settings = base
        if let value = duration("handshake_timeout", in: table, allowZero: false) { settings.handshakeTimeout = value }
        if let value = duration("idle_timeout", in: table, allowZero: false) { settings.idleTimeout = value }
        // 0 is allowed: the pair closes as soon as one side has finished and the other is quiet.
        if let value = duration("half_close_timeout", in: table, allowZero: true) { settings.halfCloseTimeout = value }
        if let value = duration("connect_timeout", in: table, allowZero: false) { settings.connectTimeout = value }
        if let value = integer("max_connections_per_ip", in: table, range: 0...Int.max) {
            settings.maxConnectionsPerIP = value
        }
        if let value = integer("max_new_connections_per_ip", in: table, range: 0...Int.max) {
            settings.maxNewConnectionsPerIP = value
        }
        let bufferRange = ConfigurationDefaults.minimumBufferSize...ConfigurationDefaults.maximumBufferSize
        if let value = size("buffer_size", in: table, range: bufferRange) { settings.bufferSize = value }
        return settings
    }
}
