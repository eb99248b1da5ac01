import Foundation

/// `openssl s_client` as a test client.
public enum OpenSSLClient {
    /// What `openssl s_client -brief` reported.
    public struct Result: Sendable {
        /// Exit code of s_client.
        public var exitCode: Int32
        /// `Protocol version:` (e.g. `TLSv1.3`).
        public var protocolVersion: String?
        /// `Ciphersuite:` (OpenSSL's name).
        public var cipher: String?
        /// `ALPN protocol:`.
        public var alpn: String?
        /// `Verification:` said OK.
        public var verified: Bool
        /// `Peer certificate:` line.
        public var peerCertificate: String?
        /// `CONNECTION ESTABLISHED` was printed.
        public var established: Bool
        public var stdout: String
        public var stderr: String
    }

    /// Connects with `openssl s_client -brief`, sends `input` (then end of input, which ends s_client), and parses
    /// what it printed.
    /// - Parameters:
    ///   - extraArguments: e.g. `["-tls1_2"]`, `["-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]`, `["-alpn", "h2"]`.
    public static func connect(
        host: String = "127.0.0.1",
        port: Int,
        serverName: String? = nil,
        caFile: String? = nil,
        extraArguments: [String] = [],
        input: String = "",
        timeout: TimeInterval = 15
    ) throws -> Result {
        guard let openssl = Subprocess.which("openssl") else {
            throw SubprocessError("the openssl command is not installed (apt-get install openssl)")
        }
        var arguments = ["s_client", "-connect", "\(host):\(port)", "-brief"]
        if let serverName { arguments += ["-servername", serverName] } else { arguments += ["-noservername"] }
        if let caFile { arguments += ["-CAfile", caFile, "-verify_return_error"] }
        arguments += extraArguments
        let run = try Subprocess.run(openssl, arguments, input: Data(input.utf8), timeout: timeout)
        let lines = run.stderrLines + run.stdoutLines
        func value(_ prefix: String) -> String? {
            lines.first { $0.hasPrefix(prefix) }.map {
                String($0.dropFirst(prefix.count)).trimmingCharacters(in: .whitespaces)
            }
        }
        return Result(
            exitCode: run.exitCode,
            protocolVersion: value("Protocol version:"),
            cipher: value("Ciphersuite:"),
            alpn: value("ALPN protocol:"),
            verified: value("Verification:") == "OK",
            peerCertificate: value("Peer certificate:"),
            established: lines.contains("CONNECTION ESTABLISHED"),
            stdout: run.stdout,
            stderr: run.stderr
        )
    }
}
