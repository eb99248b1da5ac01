import COpenSSL

/// Owns one `SSL_SESSION` reference.
final class TLSSessionBox: @unchecked Sendable {
    let session: OpaquePointer

    init(taking session: OpaquePointer) {
        self.session = session
    }

    deinit {
        SSL_SESSION_free(self.session)
    }
}
