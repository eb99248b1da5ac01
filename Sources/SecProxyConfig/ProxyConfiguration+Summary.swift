extension ProxyConfiguration {
    /// The number of distinct backend addresses, compared as written, over every listener's `backends` and
    /// its routes' `backends` (the "M backends" of `--check-config`'s summary line).
    public var distinctBackendCount: Int {
        var texts = Set<String>()
        for listener in listeners {
            texts.formUnion(listener.backends.map(\.text))
            for route in listener.routes {
                texts.formUnion(route.backends.map(\.text))
            }
        }
        return texts.count
    }
}
