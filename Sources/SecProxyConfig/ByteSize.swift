/// A size in bytes as written in the configuration: a whole number and a unit, e.g. "64KiB".
///
/// Units: `B`; binary `KiB`, `MiB`, `GiB` (powers of 1024); decimal `KB`, `MB`, `GB` (powers of 1000).
struct ByteSize: Hashable, Sendable, Comparable {
    /// The size in bytes.
    var bytes: Int

    static let units: [(symbol: String, factor: Int)] = [
        ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
        ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000),
        ("B", 1),
    ]

    /// The unit symbols, in the order shown in messages.
    static let unitList = "B, KiB, MiB, GiB, KB, MB, GB"

    init(bytes: Int) {
        self.bytes = bytes
    }

    /// Parses "NUMBER UNIT" without spaces; `nil` when malformed or too large.
    /// - Parameter text: the string as written.
    init?(configText text: String) {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let unitText = text.dropFirst(digits.count)
        guard !digits.isEmpty, let value = Int(digits),
            let unit = Self.units.first(where: { $0.symbol == unitText })
        else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: unit.factor)
        guard !overflow else { return nil }
        self.bytes = bytes
    }

    static func < (lhs: ByteSize, rhs: ByteSize) -> Bool { lhs.bytes < rhs.bytes }
}
