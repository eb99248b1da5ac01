/// SNI name → certificate. Exact names beat wildcards; "*.example.org" matches exactly one label;
/// case-insensitive; the first entry for a name wins (SNI entries are added before the default).
struct SNINameTable {
    enum Target: Equatable {
        case defaultCertificate
        case sni(Int)
    }

    private var exact: [String: Target] = [:]
    /// Keyed by the part after "*.".
    private var wildcard: [String: Target] = [:]

    mutating func add(_ name: String, target: Target) {
        let name = Self.normalize(name)
        if name.hasPrefix("*.") {
            let suffix = String(name.dropFirst(2))
            if !suffix.isEmpty, self.wildcard[suffix] == nil { self.wildcard[suffix] = target }
        } else if !name.isEmpty, self.exact[name] == nil {
            self.exact[name] = target
        }
    }

    func lookup(_ serverName: String) -> Target? {
        let name = Self.normalize(serverName)
        if let target = self.exact[name] { return target }
        guard let dot = name.firstIndex(of: ".") else { return nil }
        let suffix = name[name.index(after: dot)...]
        guard !suffix.isEmpty, name.startIndex != dot else { return nil }
        return self.wildcard[String(suffix)]
    }

    private static func normalize(_ name: String) -> String {
        var name = name.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        return name
    }
}
