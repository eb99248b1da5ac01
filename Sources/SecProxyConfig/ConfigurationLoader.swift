/// Reads a configuration file into a `ProxyConfiguration`, collecting every problem.
///
/// Pure Swift: syntax, keys, types, values and cross-key rules. Checks that need the file system
/// beyond reading the config itself, or OpenSSL (certificates, keys, cipher strings), happen in
/// the daemon's prepare step, which appends its diagnostics to these.
public enum ConfigurationLoader {
    /// The outcome of loading: the configuration when there were no errors, and all diagnostics.
    public struct Result: Sendable {
        /// `nil` when any diagnostic is an error.
        public var configuration: ProxyConfiguration?
        /// Errors and warnings, sorted by position.
        public var diagnostics: [Diagnostic]
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
        let document = TOMLParser.parse(text)
        var reader = ConfigurationReader(path: path, directory: directory)
        for problem in document.problems {
            reader.error(problem.message, at: problem.location)
        }
        let configuration = reader.read(document.root)
        let diagnostics = reader.diagnostics.sortedByLocation()
        return Result(configuration: diagnostics.containsErrors ? nil : configuration, diagnostics: diagnostics)
    }
}
