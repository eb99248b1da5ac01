/// The version printed by `secproxy --version`.
public enum SecProxyVersion {
    public static let string = "0.1.0"
}
