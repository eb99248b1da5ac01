/// Defaults for keys whose model type has no default of its own (`Located` values need a position,
/// so `TLSSettings.init` cannot supply them). Everything else defaults through the model's initializers:
/// `ServerSettings()`, `ConnectionSettings()`, `HealthCheckSettings(location:)`, `ListenerConfiguration`'s
/// parameters.
public enum ConfigurationDefaults {
    /// `mode` when a listener does not set it. TLS, so that forgetting `mode` never serves plaintext.
    public static let listenerMode: ListenerMode = .tls
    /// `[listener.tls] min_version`.
    public static let minTLSVersion: TLSProtocolVersion = .tls12
    /// `[listener.tls] max_version`.
    public static let maxTLSVersion: TLSProtocolVersion = .tls13
    /// `[listener.tls] ciphers`: "" = the TLS layer's secure default (ECDHE + AEAD only).
    public static let ciphers = ""
    /// `[listener.tls] ciphersuites`: "" = OpenSSL's TLS 1.3 default.
    public static let ciphersuites = ""
    /// `[listener.tls] curves`, also used when the key is set to "": ECDHE groups only (OpenSSL's own default
    /// list would also offer finite-field groups).
    public static let curves = "X25519:P-256:P-384"
    /// Smallest `buffer_size`: below this, per-read overhead dominates and TLS records (16 KiB) need several reads.
    public static let minimumBufferSize = 1 << 10
    /// Largest `buffer_size`: two directions times this per connection must stay affordable at
    /// `max_connections`.
    public static let maximumBufferSize = 64 << 20
    /// Largest `workers`.
    public static let maximumWorkers = 1024
}
