/// Turns file paths written in the configuration into absolute, normalized paths.
enum PathResolver {
    /// `written` if absolute, else `directory/written`; then `.` and `..` segments and repeated
    /// slashes are removed (`..` at the root stays at the root). No symlinks are followed and the
    /// file system is not touched: the daemon's prepare step opens the files.
    /// - Parameters:
    ///   - written: the path as written in the configuration.
    ///   - directory: the absolute folder of the configuration file.
    static func resolve(_ written: String, against directory: String) -> String {
        let joined = written.hasPrefix("/") ? written : directory + "/" + written
        var segments: [Substring] = []
        for segment in joined.split(separator: "/", omittingEmptySubsequences: true) {
            switch segment {
            case ".": continue
            case "..": _ = segments.popLast()
            default: segments.append(segment)
            }
        }
        return "/" + segments.joined(separator: "/")
    }
}
