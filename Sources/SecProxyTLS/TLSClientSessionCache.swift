/// The last resumable session per server name; bounded.
final class TLSClientSessionCache: @unchecked Sendable {
    private static let maximumEntries = 1024
    private let lock = TLSLock()
    private var sessions: [String: TLSSessionBox] = [:]

    func get(_ key: String) -> TLSSessionBox? {
        self.lock.withLock { self.sessions[key] }
    }

    func set(_ session: TLSSessionBox, for key: String) {
        // The old box (if any) is released outside the lock, after withLock returns.
        let replaced: TLSSessionBox? = self.lock.withLock {
            if self.sessions.count >= Self.maximumEntries, self.sessions[key] == nil {
                self.sessions.removeAll(keepingCapacity: true)
            }
            return self.sessions.updateValue(session, forKey: key)
        }
        _ = replaced
    }

    func removeAll() {
        let old = self.lock.withLock { () -> [String: TLSSessionBox] in
            let old = self.sessions
            self.sessions = [:]
            return old
        }
        _ = old
    }
}
