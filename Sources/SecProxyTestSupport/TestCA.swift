import Foundation

/// A throwaway certificate authority made with the `openssl` command-line tool (3.0 compatible: dates are set with
/// `openssl ca -startdate/-enddate`, so already-expired and soon-expiring certificates can be made).
///
/// Private keys are written with mode 0600.
public final class TestCA: @unchecked Sendable {
    /// The kind of key a certificate gets.
    public enum KeyType: Sendable {
        case ecdsaP256
        case rsa2048

        var genpkeyArguments: [String] {
            switch self {
            case .ecdsaP256: return ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
            case .rsa2048: return ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
            }
        }
    }

    /// What a certificate is for.
    public enum Usage: Sendable {
        case server
        case client
    }

    /// A certificate and its key on disk.
    public struct Issued: Sendable {
        /// The certificate (PEM).
        public var certPath: String
        /// Its private key (PEM, PKCS#8, mode 0600).
        public var keyPath: String
        /// The certificate followed by the CA certificate.
        public var chainPath: String
        /// The subject CN.
        public var commonName: String
        /// The DNS SANs, in order.
        public var dnsNames: [String]
        /// The notAfter instant.
        public var notAfter: Date

        /// notAfter as `YYYY-MM-DD` in UTC.
        public var notAfterDay: String { TestCA.day(notAfter) }
    }

    /// Where the files are.
    public let directory: String
    /// The CA certificate (PEM).
    public let caCertPath: String
    /// The CA key.
    public let caKeyPath: String
    private let openssl: String
    private let lock = NSLock()
    private var counter = 0
    private let ownedDirectory: TemporaryDirectory?

    /// Creates a CA (ECDSA P-256, valid from a day ago for 10 years) in `directory`, or in a new temporary directory.
    public init(directory: String? = nil, commonName: String = "secproxy test CA") throws {
        if let directory {
            self.directory = directory
            self.ownedDirectory = nil
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } else {
            let temporary = try TemporaryDirectory(prefix: "secproxy-ca")
            self.ownedDirectory = temporary
            self.directory = temporary.path
        }
        guard let openssl = Subprocess.which("openssl") else {
            throw SubprocessError("the openssl command is not installed (apt-get install openssl)")
        }
        self.openssl = openssl
        self.caCertPath = self.directory + "/ca.pem"
        self.caKeyPath = self.directory + "/ca.key"
        let db = self.directory + "/ca-db"
        try FileManager.default.createDirectory(atPath: db + "/new", withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: db + "/index.txt"))
        try Data("unique_subject = no\n".utf8).write(to: URL(fileURLWithPath: db + "/index.txt.attr"))
        try Data(Self.caConfig(db: db, cert: caCertPath, key: caKeyPath).utf8)
            .write(to: URL(fileURLWithPath: db + "/ca.cnf"))
        try makeKey(.ecdsaP256, at: caKeyPath)
        let start = Date().addingTimeInterval(-86400)
        try makeCSR(key: caKeyPath, commonName: commonName, at: db + "/ca.csr")
        // Self-signed through `openssl ca -selfsign`, so the dates are exact like every other certificate.
        try sign(
            csr: db + "/ca.csr",
            extensions: "v3_ca",
            extensionsFile: db + "/ca.cnf",
            start: start,
            end: start.addingTimeInterval(3650 * 86400),
            out: caCertPath,
            selfSign: true
        )
    }

    /// Issues a certificate signed by this CA.
    /// - Parameters:
    ///   - name: the base of the file names (`NAME.pem`, `NAME.key`, `NAME-chain.pem`).
    ///   - keyType: ECDSA P-256 or RSA 2048.
    ///   - commonName: the subject CN (default: the first DNS name, else `name`).
    ///   - dnsNames: DNS SANs (server default: `localhost`).
    ///   - ipAddresses: IP SANs (server default: `127.0.0.1`, `::1`).
    ///   - uris: URI SANs.
    ///   - usage: server or client certificate.
    ///   - notBefore: start of validity (default: a day ago).
    ///   - notAfter: end of validity (default: a year from now).
    @discardableResult
    public func issue(
        _ name: String,
        keyType: KeyType = .ecdsaP256,
        commonName: String? = nil,
        dnsNames: [String]? = nil,
        ipAddresses: [String]? = nil,
        uris: [String] = [],
        usage: Usage = .server,
        notBefore: Date? = nil,
        notAfter: Date? = nil
    ) throws -> Issued {
        let dns = dnsNames ?? (usage == .server ? ["localhost"] : [])
        let ips = ipAddresses ?? (usage == .server ? ["127.0.0.1", "::1"] : [])
        let cn = commonName ?? dns.first ?? name
        let start = notBefore ?? Date().addingTimeInterval(-86400)
        let end = notAfter ?? Date().addingTimeInterval(365 * 86400)
        let certPath = directory + "/\(name).pem"
        let keyPath = directory + "/\(name).key"
        let chainPath = directory + "/\(name)-chain.pem"
        let serial = lock.withLock { () -> Int in
            counter += 1
            return counter
        }
        let work = directory + "/ca-db/\(name)-\(serial)"
        try makeKey(keyType, at: keyPath)
        try makeCSR(key: keyPath, commonName: cn, at: work + ".csr")
        var sans = dns.map { "DNS:\($0)" } + ips.map { "IP:\($0)" } + uris.map { "URI:\($0)" }
        if sans.isEmpty { sans = [] }
        var ext = """
            [leaf]
            basicConstraints = critical,CA:FALSE
            keyUsage = critical,digitalSignature,keyEncipherment
            extendedKeyUsage = \(usage == .server ? "serverAuth" : "clientAuth")
            subjectKeyIdentifier = hash
            authorityKeyIdentifier = keyid

            """
        if !sans.isEmpty { ext += "subjectAltName = \(sans.joined(separator: ","))\n" }
        try Data(ext.utf8).write(to: URL(fileURLWithPath: work + ".ext"))
        try sign(
            csr: work + ".csr",
            extensions: "leaf",
            extensionsFile: work + ".ext",
            start: start,
            end: end,
            out: certPath
        )
        let chain =
            try String(contentsOfFile: certPath, encoding: .utf8) + String(contentsOfFile: caCertPath, encoding: .utf8)
        try Data(chain.utf8).write(to: URL(fileURLWithPath: chainPath))
        return Issued(
            certPath: certPath,
            keyPath: keyPath,
            chainPath: chainPath,
            commonName: cn,
            dnsNames: dns,
            notAfter: Self.wholeSeconds(end)
        )
    }

    /// A server certificate for localhost (DNS `localhost` plus `extraDNSNames`, IP 127.0.0.1 and ::1).
    @discardableResult
    public func serverCertificate(
        _ name: String = "server",
        keyType: KeyType = .ecdsaP256,
        extraDNSNames: [String] = [],
        notAfter: Date? = nil
    ) throws -> Issued {
        try issue(name, keyType: keyType, dnsNames: ["localhost"] + extraDNSNames, notAfter: notAfter)
    }

    /// A server certificate that expired a year ago (valid two years ago for a year).
    @discardableResult
    public func expiredCertificate(_ name: String = "expired", keyType: KeyType = .ecdsaP256) throws -> Issued {
        let now = Date()
        return try issue(
            name,
            keyType: keyType,
            notBefore: now.addingTimeInterval(-730 * 86400),
            notAfter: now.addingTimeInterval(-365 * 86400)
        )
    }

    /// A server certificate that expires in `days` days (10 by default: within the 30-day warning window).
    @discardableResult
    public func expiringCertificate(
        _ name: String = "expiring",
        days: Double = 10,
        keyType: KeyType = .ecdsaP256
    )
        throws -> Issued
    {
        try issue(name, keyType: keyType, notAfter: Date().addingTimeInterval(days * 86400))
    }

    /// A client certificate with subject CN `commonName` (for mTLS).
    @discardableResult
    public func clientCertificate(
        _ name: String = "client",
        commonName: String = "client",
        dnsNames: [String] = [],
        uris: [String] = [],
        keyType: KeyType = .ecdsaP256
    ) throws -> Issued {
        try issue(
            name,
            keyType: keyType,
            commonName: commonName,
            dnsNames: dnsNames,
            ipAddresses: [],
            uris: uris,
            usage: .client
        )
    }

    /// A fresh private key that matches no certificate (mode 0600).
    @discardableResult
    public func unrelatedKey(_ name: String = "unrelated", keyType: KeyType = .ecdsaP256) throws -> String {
        let path = directory + "/\(name).key"
        try makeKey(keyType, at: path)
        return path
    }

    /// The notAfter of the certificate at `path`, read back with `openssl x509 -enddate`.
    public func notAfter(of path: String) throws -> Date {
        let result = try runOpenSSL(["x509", "-in", path, "-noout", "-enddate"])
        // notAfter=Jan  1 00:00:00 2021 GMT
        let text = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "notAfter=", with: "")
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "MMM d HH:mm:ss yyyy zzz"
        let squeezed = text.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        guard let date = formatter.date(from: squeezed) else {
            throw SubprocessError("cannot parse notAfter '\(text)' of \(path)")
        }
        return date
    }

    /// `openssl verify -CAfile ca.pem path` succeeded.
    public func verifies(_ path: String) throws -> Bool {
        let result = try Subprocess.run(openssl, ["verify", "-CAfile", caCertPath, path], timeout: 30)
        return result.exitCode == 0
    }

    /// `YYYY-MM-DD` of `date` in UTC.
    public static func day(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd"
        return formatter.string(from: date)
    }

    // MARK: - openssl

    @discardableResult
    private func runOpenSSL(_ arguments: [String]) throws -> Subprocess.Result {
        let result = try Subprocess.run(openssl, arguments, currentDirectory: directory, timeout: 60)
        guard result.exitCode == 0 else {
            throw SubprocessError(
                "openssl \(arguments.joined(separator: " ")) failed (\(result.status)):\n"
                    + result.stderr + result.stdout
            )
        }
        return result
    }

    private func makeKey(_ type: KeyType, at path: String) throws {
        try? FileManager.default.removeItem(atPath: path)
        try runOpenSSL(["genpkey"] + type.genpkeyArguments + ["-out", path])
        try setMode(path, 0o600)
    }

    private func makeCSR(key: String, commonName: String, at path: String) throws {
        try runOpenSSL(["req", "-new", "-key", key, "-subj", "/CN=\(Self.escapeDN(commonName))", "-out", path])
    }

    private func sign(
        csr: String,
        extensions: String,
        extensionsFile: String,
        start: Date,
        end: Date,
        out: String,
        selfSign: Bool = false
    ) throws {
        var arguments = [
            "ca", "-batch", "-config", directory + "/ca-db/ca.cnf", "-notext", "-md", "sha256",
            "-startdate", Self.generalizedTime(start), "-enddate", Self.generalizedTime(end),
            "-extfile", extensionsFile, "-extensions", extensions, "-in", csr, "-out", out,
        ]
        if selfSign { arguments += ["-selfsign", "-keyfile", caKeyPath] }
        try runOpenSSL(arguments)
    }

    static func generalizedTime(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMddHHmmss'Z'"
        return formatter.string(from: date)
    }

    static func wholeSeconds(_ date: Date) -> Date {
        Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
    }

    static func escapeDN(_ value: String) -> String {
        value.replacingOccurrences(of: "/", with: "\\/")
    }

    static func caConfig(db: String, cert: String, key: String) -> String {
        """
        [ca]
        default_ca = testca

        [testca]
        database = \(db)/index.txt
        new_certs_dir = \(db)/new
        rand_serial = yes
        certificate = \(cert)
        private_key = \(key)
        default_md = sha256
        policy = policy_any
        copy_extensions = none
        unique_subject = no
        email_in_dn = no

        [policy_any]
        commonName = supplied

        [v3_ca]
        basicConstraints = critical,CA:TRUE
        keyUsage = critical,keyCertSign,cRLSign
        subjectKeyIdentifier = hash

        """
    }
}
