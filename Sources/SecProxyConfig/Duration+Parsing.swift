extension Duration {
    /// The units a configuration duration may use, longest symbol first so that "ms" wins over "m".
    private static let configUnits: [(symbol: String, nanoseconds: Int64)] = [
        ("ms", 1_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
    ]

    /// Parses a configuration duration: one or more `NUMBER UNIT` parts with the units `ms`, `s`, `m`, `h`,
    /// e.g. "250ms", "10s", "1.5s", "1m30s". A fraction is allowed ("1.5s"); digits beyond nanoseconds are
    /// dropped. A bare "0" is accepted as zero, since it is unambiguous. Returns `nil` for anything else,
    /// including signs, spaces and values too large to represent.
    /// - Parameter text: the string as written.
    init?(configText text: String) {
        if text == "0" {
            self = .zero
            return
        }
        var rest = Substring(text)
        var total: Int64 = 0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let whole = rest.prefix { $0.isASCII && $0.isNumber }
            guard !whole.isEmpty else { return nil }
            rest = rest.dropFirst(whole.count)
            var fraction = Substring("")
            if rest.first == "." {
                rest = rest.dropFirst()
                fraction = rest.prefix { $0.isASCII && $0.isNumber }
                guard !fraction.isEmpty else { return nil }
                rest = rest.dropFirst(fraction.count)
            }
            guard let unit = Self.configUnits.first(where: { rest.hasPrefix($0.symbol) }) else { return nil }
            rest = rest.dropFirst(unit.symbol.count)
            guard let part = Self.nanoseconds(whole: whole, fraction: fraction, unit: unit.nanoseconds) else {
                return nil
            }
            let (sum, overflow) = total.addingReportingOverflow(part)
            guard !overflow else { return nil }
            total = sum
        }
        self = .nanoseconds(total)
    }

    /// `whole.fraction` units in nanoseconds, or `nil` on overflow.
    private static func nanoseconds(whole: Substring, fraction: Substring, unit: Int64) -> Int64? {
        guard let wholeValue = Int64(whole) else { return nil }
        let (wholeNanos, overflow) = wholeValue.multipliedReportingOverflow(by: unit)
        guard !overflow else { return nil }
        // The fraction contributes less than one unit, so it fits; stop once further digits are below 1 ns.
        var fractionNanos: Int64 = 0
        var scale = unit
        for digit in fraction {
            scale /= 10
            if scale == 0 { break }
            fractionNanos += Int64(digit.wholeNumberValue!) * scale
        }
        let (sum, sumOverflow) = wholeNanos.addingReportingOverflow(fractionNanos)
        return sumOverflow ? nil : sum
    }
}
