import COpenSSL

/// A TLS failure: loading certificates or keys, building a context, or a handshake or record error
/// on a connection.
///
/// `reason` is short and stable enough for logs and metric labels; `description` adds what was being
/// done and the whole OpenSSL error stack. Neither ever contains key material or application bytes.
public struct TLSError: Error, Sendable, CustomStringConvertible, Equatable {
    /// Short, log-friendly reason: OpenSSL's reason string of the first queued error
    /// (e.g. "wrong version number", "no shared cipher") or our own ("handshake eof", ...).
    public var reason: String
    /// The fuller message, including the drained OpenSSL error stack.
    public var description: String

    /// - Parameters:
    ///   - reason: the short reason.
    ///   - description: the fuller message; defaults to `reason`.
    public init(reason: String, description: String? = nil) {
        self.reason = reason
        self.description = description ?? reason
    }
}

extension TLSError {
    /// Drains the calling thread's OpenSSL error queue into one error.
    ///
    /// - Parameters:
    ///   - operation: what was being done, for `description` ("SSL_do_handshake", "loading key ...").
    ///   - prefix: prepended to the reason (e.g. "cipher list: "), so the reason says what failed.
    ///   - fallback: the reason used when the queue is empty.
    static func drainingErrorQueue(operation: String, prefix: String = "", fallback: String) -> TLSError {
        var firstReason: String?
        var stack: [String] = []
        while true {
            var data: UnsafePointer<CChar>?
            var flags: Int32 = 0
            let code = ERR_get_error_all(nil, nil, nil, &data, &flags)
            if code == 0 { break }
            let reason = ERR_reason_error_string(code).map { String(cString: $0) } ?? "error \(code)"
            if firstReason == nil { firstReason = reason }
            var line = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { buffer -> String in
                ERR_error_string_n(code, buffer.baseAddress, 256)
                return String(cString: buffer.baseAddress!)
            }
            if let data, (flags & ERR_TXT_STRING) != 0 {
                let text = String(cString: data)
                if !text.isEmpty { line += " (\(text))" }
            }
            stack.append(line)
        }
        let reason = prefix + (firstReason ?? fallback)
        var description = "\(operation): \(reason)"
        if !stack.isEmpty {
            description += " [" + stack.joined(separator: "; ") + "]"
        }
        return TLSError(reason: reason, description: description)
    }

    /// An error of our own; the OpenSSL queue is cleared so it cannot leak into the next call.
    static func own(_ reason: String, detail: String? = nil) -> TLSError {
        ERR_clear_error()
        return TLSError(reason: reason, description: detail.map { "\(reason): \($0)" } ?? reason)
    }
}
