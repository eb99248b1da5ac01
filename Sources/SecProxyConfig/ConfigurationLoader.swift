/// Reads a configuration file into a `ProxyConfiguration`, collecting every problem.
///
/// Pure Swift: syntax, keys, types, values and cross-key rules. Checks that need the file system
/// beyond reading the config itself, or OpenSSL (certificates, keys, cipher strings), happen in
/// the daemon's prepare step, which appends its diagnostics to these.
public enum ConfigurationLoader {
    /// The largest configuration accepted, in bytes (1 MiB): a real one is a few KiB, and the limit bounds what a
    /// hostile or mistaken file (a log, a core dump) costs `--check-config` and a reload of a running daemon.
    public static let maximumSize = 1 << 20

    /// The most diagnostics one load reports (`Array.limited(to:)`); a real configuration never comes close,
    /// and the limit bounds what a hostile file costs `--check-config` and the log of a reload.
    public static let maximumDiagnostics = 200

    /// The outcome of loading: the configuration when there were no errors, and all diagnostics.
    public struct Result: Sendable {
        /// `nil` when any diagnostic is an error.
        public var configuration: ProxyConfiguration?
        /// Errors and warnings, sorted by position.
        public var diagnostics: [Diagnostic]
        /// Every listener's file settings that could be read, in file order, also when there are errors.
        public var listenerFiles: [ListenerFiles]
    }

    /// Parses and checks `text` as the contents of the file at `path`.
    ///
    /// Syntax problems do not stop the checks: whatever the parser could read is checked too, so that one run
    /// reports everything.
    /// - Parameters:
    ///   - text: the file's contents.
    ///   - path: the path as the user gave it (used verbatim in diagnostics).
    ///   - directory: absolute folder against which relative paths are resolved.
    public static func load(text: String, path: String, directory: String) -> Result {
        let size = text.utf8.count
        guard size <= maximumSize else {
            let message = "configuration is \(size) bytes, larger than \(maximumSize >> 20) MiB, the most a configuration may be"
            return Result(configuration: nil, diagnostics: [.error(message, at: nil, file: path)], listenerFiles: [])
        }
        let document = TOMLParser.parse(text)
        var reader = ConfigurationReader(path: path, directory: directory)
        for problem in document.problems {
            reader.error(problem.message, at: problem.location)
        }
        let configuration = reader.read(document.root)
        let diagnostics = reader.diagnostics.sortedByLocation().limited(to: maximumDiagnostics)
        return Result(
            configuration: diagnostics.containsErrors ? nil : configuration,
            diagnostics: diagnostics,
            listenerFiles: reader.listenerFiles
        )
    }
}
