import NIOConcurrencyHelpers
import NIOCore

/// `max_connections_per_ip` and `max_new_connections_per_ip` for one listener.
///
/// Clients are counted by IPv4 address, and by /64 prefix for IPv6 (one end site usually holds a
/// whole /64, so per-address counting would let one host use 2^64 identities). Checked right after
/// accept, before any TLS work or backend connect.
///
/// Memory is bounded: an entry lives while its client has open connections, or for at most one
/// second after (until its token bucket is full again); idle entries are swept as the table grows,
/// so a flood of distinct source addresses cannot grow it beyond what `max_connections` and one
/// second of accepts allow.
public final class PerIPLimiter: Sendable {
    /// A client's identity for the limits.
    enum Key: Hashable {
        case v4(UInt32)
        case v6Prefix(UInt64)

        init?(_ address: SocketAddress) {
            switch address {
            case .v4(let v4):
                self = .v4(UInt32(bigEndian: v4.address.sin_addr.s_addr))
            case .v6(let v6):
                var storage = v6.address.sin6_addr
                self = withUnsafeBytes(of: &storage) { bytes in
                    // IPv4-mapped addresses (::ffff:a.b.c.d) count as the IPv4 client they are.
                    if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
                        return .v4(bytes[12...15].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
                    }
                    return .v6Prefix(bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
                }
            case .unixDomainSocket:
                return nil
            }
        }
    }

    enum Decision: Equatable {
        case admitted
        case overConcurrent
        case overRate
    }

    private struct Entry {
        var open: Int
        var tokens: Double
        var refilledAt: NIODeadline
    }

    private struct Table {
        var entries: [Key: Entry] = [:]
        var sweepAt = 1024
    }

    private let table = NIOLockedValueBox(Table())

    public init() {}

    /// Number of clients tracked now (for tests and bounds).
    public var trackedClients: Int {
        table.withLockedValue { $0.entries.count }
    }

    /// Counts a new connection from `key` if the limits allow it (0 = unlimited).
    func admit(_ key: Key, maxConcurrent: Int, maxPerSecond: Int, now: NIODeadline = .now()) -> Decision {
        if maxConcurrent == 0 && maxPerSecond == 0 { return .admitted }
        return table.withLockedValue { table in
            var entry = table.entries[key] ?? Entry(open: 0, tokens: Double(maxPerSecond), refilledAt: now)
            if maxConcurrent > 0 && entry.open >= maxConcurrent {
                return .overConcurrent
            }
            if maxPerSecond > 0 {
                // A bucket holding one second's worth, refilled continuously.
                let elapsed = Double((now - entry.refilledAt).nanoseconds) / 1e9
                entry.tokens = min(Double(maxPerSecond), entry.tokens + elapsed * Double(maxPerSecond))
                entry.refilledAt = now
                guard entry.tokens >= 1 else {
                    table.entries[key] = entry
                    return .overRate
                }
                entry.tokens -= 1
            }
            entry.open += 1
            table.entries[key] = entry
            if table.entries.count >= table.sweepAt {
                Self.sweep(&table, now: now, maxPerSecond: maxPerSecond)
            }
            return .admitted
        }
    }

    /// The connection counted by `admit` ended.
    func release(_ key: Key) {
        table.withLockedValue { table in
            table.entries[key]?.open -= 1
        }
    }

    /// Drops entries with no open connection whose bucket is full again (they hold no information).
    private static func sweep(_ table: inout Table, now: NIODeadline, maxPerSecond: Int) {
        table.entries = table.entries.filter { _, entry in
            guard entry.open <= 0 else { return true }
            let elapsed = Double((now - entry.refilledAt).nanoseconds) / 1e9
            return maxPerSecond > 0 && entry.tokens + elapsed * Double(maxPerSecond) < Double(maxPerSecond)
        }
        table.sweepAt = max(1024, table.entries.count * 2)
    }
}
