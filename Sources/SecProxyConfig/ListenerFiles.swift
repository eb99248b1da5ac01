/// The parts of one `[[listener]]` that name files, as far as they could be read, even when the configuration
/// has errors: the daemon's prepare step checks them on disk in every case, so that an error in one listener
/// (an empty `backends`) does not hide a missing certificate in another (SPEC §1: all problems in one run).
public struct ListenerFiles: Sendable {
    /// The listener's name; `nil` when it has no valid one.
    public var name: String?
    /// `[listener.tls]`, when it could be read and the listener is not in `plain` mode (where it is ignored).
    public var tls: TLSSettings?
    /// `[listener.backend_tls]`, when it could be read.
    public var backendTLS: BackendTLSSettings?

    public init(name: String?, tls: TLSSettings?, backendTLS: BackendTLSSettings?) {
        self.name = name
        self.tls = tls
        self.backendTLS = backendTLS
    }
}
