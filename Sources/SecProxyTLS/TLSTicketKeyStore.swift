/// The session ticket keys of one `TLSServerContext`, shared by all of its `SSL_CTX`s and read by
/// the ticket key callback on any event loop thread (hence the lock).
///
/// Keys from a file are fixed for the life of the context (a reload builds a new one). Random keys
/// rotate: every `interval` a new key becomes current and the previous one still decrypts, so a
/// ticket stays usable for one to two intervals. Rotation is lazy (checked whenever a key is looked
/// up), so no timer is needed; `rotate(now:)` forces one.
final class TLSTicketKeyStore: @unchecked Sendable {
    private enum Mode {
        /// Keys from a file, first key current.
        case fixed
        /// Random keys; `keys[0]` is current, `keys[1]` (if any) the previous one.
        case rotating(interval: Duration, nextRotation: ContinuousClock.Instant)
    }

    private let lock = TLSLock()
    private var keys: [TLSTicketKey]
    private var mode: Mode

    /// Fixed keys; the first encrypts, all decrypt.
    init(fixed keys: [TLSTicketKey]) {
        precondition(!keys.isEmpty, "a ticket key store needs at least one key")
        self.keys = keys
        self.mode = .fixed
    }

    /// One random key now, a new one every `interval`.
    ///
    /// - Throws: `TLSError` when no random key can be made.
    init(rotatingEvery interval: Duration, now: ContinuousClock.Instant = .now) throws {
        self.keys = [try TLSTicketKey.random()]
        self.mode = .rotating(interval: interval, nextRotation: now + interval)
    }

    /// The key that encrypts new tickets (after a rotation that was due).
    func encryptionKey(now: ContinuousClock.Instant = .now) -> TLSTicketKey {
        self.lock.withLock {
            self.rotateIfDue(now: now)
            return self.keys[0]
        }
    }

    /// The key named `name`, and whether it is the current one (if not, the ticket gets renewed).
    func decryptionKey(
        named name: UnsafeBufferPointer<UInt8>,
        now: ContinuousClock.Instant = .now
    ) -> (key: TLSTicketKey, isCurrent: Bool)? {
        self.lock.withLock {
            self.rotateIfDue(now: now)
            guard let index = self.keys.firstIndex(where: { $0.name.elementsEqual(name) }) else { return nil }
            return (self.keys[index], index == 0)
        }
    }

    /// Random keys: a new current key now, the current one kept for decryption, and the next
    /// rotation one interval from now. Fixed keys: no effect.
    func rotate(now: ContinuousClock.Instant = .now) {
        self.lock.withLock {
            guard case .rotating(let interval, _) = self.mode else { return }
            // RAND_bytes failing leaves the keys as they are; the next lookup tries again.
            guard let fresh = try? TLSTicketKey.random() else { return }
            self.keys = [fresh, self.keys[0]]
            self.mode = .rotating(interval: interval, nextRotation: now + interval)
        }
    }

    /// Rotates when the current key has served its interval. Call with the lock held.
    private func rotateIfDue(now: ContinuousClock.Instant) {
        guard case .rotating(let interval, let due) = self.mode, now >= due else { return }
        guard let fresh = try? TLSTicketKey.random() else { return }
        if due.duration(to: now) >= interval {
            // Idle for more than an interval: the current key is already two intervals old, so
            // neither it nor the previous one may decrypt any more.
            self.keys = [fresh]
            self.mode = .rotating(interval: interval, nextRotation: now + interval)
        } else {
            // Keep the schedule, so a key never decrypts for more than two intervals.
            self.keys = [fresh, self.keys[0]]
            self.mode = .rotating(interval: interval, nextRotation: due + interval)
        }
    }
}
