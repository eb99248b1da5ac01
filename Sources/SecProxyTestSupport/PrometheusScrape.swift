import Foundation

/// A `/metrics` response in the Prometheus text exposition format, parsed into samples (tests read values by
/// name and exact label set).
public struct PrometheusScrape: Sendable, CustomStringConvertible {
    /// One sample line: `name{label="value",...} number`.
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    /// Every sample, in the order of the text.
    public let samples: [Sample]
    /// `# TYPE` by metric name.
    public let types: [String: String]
    /// `# HELP` by metric name.
    public let help: [String: String]
    /// The text as received.
    public let text: String

    /// Parses `text`; throws on a line that is neither a comment nor a sample.
    public init(_ text: String) throws {
        self.text = text
        var samples: [Sample] = []
        var types: [String: String] = [:]
        var help: [String: String] = [:]
        for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = String(raw)
            if line.hasPrefix("# TYPE ") || line.hasPrefix("# HELP ") {
                let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { throw SubprocessError("bad comment line: \(line)") }
                if line.hasPrefix("# TYPE ") { types[parts[0]] = parts[1] } else { help[parts[0]] = parts[1] }
                continue
            }
            if line.hasPrefix("#") { continue }
            samples.append(try Self.sample(line))
        }
        self.samples = samples
        self.types = types
        self.help = help
    }

    private static func sample(_ line: String) throws -> Sample {
        let bad = SubprocessError("bad sample line: \(line)")
        var labels: [String: String] = [:]
        let name: String
        let rest: Substring
        if let brace = line.firstIndex(of: "{") {
            name = String(line[..<brace])
            var index = line.index(after: brace)
            while line[index] != "}" {
                guard let equals = line[index...].firstIndex(of: "="), line[line.index(after: equals)] == "\"" else {
                    throw bad
                }
                let key = String(line[index..<equals])
                var value = ""
                var cursor = line.index(equals, offsetBy: 2)
                while line[cursor] != "\"" {
                    if line[cursor] == "\\" {
                        cursor = line.index(after: cursor)
                        switch line[cursor] {
                        case "n": value.append("\n")
                        default: value.append(line[cursor])
                        }
                    } else {
                        value.append(line[cursor])
                    }
                    cursor = line.index(after: cursor)
                    guard cursor < line.endIndex else { throw bad }
                }
                labels[key] = value
                index = line.index(after: cursor)
                if line[index] == "," { index = line.index(after: index) }
            }
            rest = line[line.index(after: index)...]
        } else {
            guard let space = line.firstIndex(of: " ") else { throw bad }
            name = String(line[..<space])
            rest = line[space...]
        }
        let number = rest.trimmingCharacters(in: .whitespaces).split(separator: " ").first.map(String.init) ?? ""
        let value: Double
        switch number {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        default:
            guard let parsed = Double(number) else { throw bad }
            value = parsed
        }
        return Sample(name: name, labels: labels, value: value)
    }

    /// The value of the sample `name` with exactly `labels`, or nil when there is none.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    /// The samples named `name` whose labels include `matching`.
    public func samples(_ name: String, matching: [String: String] = [:]) -> [Sample] {
        samples.filter { sample in
            sample.name == name && matching.allSatisfy { sample.labels[$0.key] == $0.value }
        }
    }

    /// The sum of the samples named `name` whose labels include `matching`.
    public func sum(_ name: String, matching: [String: String] = [:]) -> Double {
        samples(name, matching: matching).reduce(0) { $0 + $1.value }
    }

    public var description: String { text }

    /// Runs `promtool check metrics` (Debian's `prometheus` package) on `text`: its exit code and output
    /// (empty when it has no remark).
    public static func promtoolCheck(_ text: String) throws -> (exitCode: Int32, output: String) {
        guard let promtool = Subprocess.which("promtool") else {
            throw SubprocessError("promtool is not installed (apt-get install prometheus)")
        }
        let run = try Subprocess.run(promtool, ["check", "metrics"], input: Data(text.utf8), timeout: 30)
        return (run.exitCode, run.stdout + run.stderr)
    }
}
