import Foundation
import XCTest

/// A throwaway PKI made with the `openssl` CLI in a temporary directory: a CA, ECDSA and RSA server
/// certificates, SNI and wildcard certificates, client certificates (one revoked by a CRL), an
/// expired certificate, a key that matches nothing, and files that are not PEM.
final class TLSTestPKI: @unchecked Sendable {
    let directory: String

    init() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent(
            "secproxy-tls-tests-\(getpid())-\(UUID().uuidString.prefix(8))"
        )
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        self.directory = base.path
        let script = base.appendingPathComponent("make-pki.sh")
        try Self.script.write(to: script, atomically: true, encoding: .utf8)
        let result = try runProcess("/bin/sh", [script.path], currentDirectory: self.directory, timeout: 60)
        guard result.status == 0 else {
            let log = (try? String(contentsOfFile: self.directory + "/make-pki.log", encoding: .utf8)) ?? ""
            throw TestFailure("making the test PKI failed (\(result.status)): \(log.suffix(2000))")
        }
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    func path(_ name: String) -> String {
        self.directory + "/" + name
    }

    var caFile: String { self.path("ca.pem") }
    /// ECDSA P-256; CN localhost; DNS:localhost, DNS:www.example.test, IP:127.0.0.1.
    var serverCert: String { self.path("server.pem") }
    var serverKey: String { self.path("server.key") }
    /// server.pem followed by ca.pem.
    var serverChain: String { self.path("server-chain.pem") }
    /// RSA 2048; DNS:rsa.example.test, DNS:localhost.
    var rsaCert: String { self.path("rsa.pem") }
    var rsaKey: String { self.path("rsa.key") }
    /// DNS:api.example.org.
    var apiCert: String { self.path("api.pem") }
    var apiKey: String { self.path("api.key") }
    /// DNS:*.wild.example.org.
    var wildcardCert: String { self.path("wild.pem") }
    var wildcardKey: String { self.path("wild.key") }
    /// DNS:exact.wild.example.org (beats the wildcard).
    var exactCert: String { self.path("exact.pem") }
    var exactKey: String { self.path("exact.key") }
    /// CN billing; DNS:worker.internal; URI:spiffe://example.org/ns/prod/sa/api.
    var clientCert: String { self.path("client.pem") }
    var clientKey: String { self.path("client.key") }
    /// Revoked in crl.pem.
    var revokedClientCert: String { self.path("revoked.pem") }
    var revokedClientKey: String { self.path("revoked.key") }
    /// Signed by another CA.
    var untrustedClientCert: String { self.path("untrusted.pem") }
    var untrustedClientKey: String { self.path("untrusted.key") }
    var crlFile: String { self.path("crl.pem") }
    /// Valid 2020-01-01 to 2020-02-01; DNS:expired.example.test.
    var expiredCert: String { self.path("expired.pem") }
    var expiredKey: String { self.path("expired.key") }
    /// CN nosan.example.test, no SAN.
    var noSANCert: String { self.path("nosan.pem") }
    /// A key that matches none of the certificates.
    var otherKey: String { self.path("other.key") }
    var encryptedKey: String { self.path("encrypted.key") }
    var traditionalECKey: String { self.path("server-traditional.key") }
    var traditionalRSAKey: String { self.path("rsa-traditional.key") }
    var notPEMFile: String { self.path("not-pem.txt") }
    var emptyFile: String { self.path("empty.pem") }

    private static let script = #"""
        set -e
        exec 2>make-pki.log
        EC="-newkey ec -pkeyopt ec_paramgen_curve:P-256"
        openssl req -x509 $EC -nodes -keyout ca.key -out ca.pem -days 30 -subj "/CN=secproxy test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        mkdir -p ca && : > ca/index.txt && echo 1000 > ca/serial && echo 1000 > ca/crlnumber
        cat > ca.cnf <<'CNF'
        [ ca ]
        default_ca = test_ca
        [ test_ca ]
        database = ./ca/index.txt
        new_certs_dir = ./ca
        serial = ./ca/serial
        crlnumber = ./ca/crlnumber
        certificate = ./ca.pem
        private_key = ./ca.key
        default_md = sha256
        default_days = 30
        default_crl_days = 30
        policy = any
        copy_extensions = copy
        unique_subject = no
        [ any ]
        commonName = supplied
        CNF
        # issue NAME KEYTYPE SUBJECT SAN EKU [openssl ca options...]
        issue() {
            name=$1; keytype=$2; subject=$3; san=$4; eku=$5; shift 5
            openssl req -new $keytype -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject" \
                -addext "subjectAltName=$san" -addext "extendedKeyUsage=$eku" -addext "basicConstraints=CA:FALSE"
            openssl ca -batch -notext -config ca.cnf -in "$name.csr" -out "$name.pem" "$@"
        }
        issue server "$EC" "/CN=localhost" "DNS:localhost,DNS:www.example.test,IP:127.0.0.1" serverAuth
        cat server.pem ca.pem > server-chain.pem
        issue rsa "-newkey rsa:2048" "/CN=rsa.example.test" "DNS:rsa.example.test,DNS:localhost" serverAuth
        issue api "$EC" "/CN=api.example.org" "DNS:api.example.org" serverAuth
        issue wild "$EC" "/CN=wild.example.org" "DNS:*.wild.example.org" serverAuth
        issue exact "$EC" "/CN=exact.wild.example.org" "DNS:exact.wild.example.org" serverAuth
        issue client "$EC" "/CN=billing" "DNS:worker.internal,URI:spiffe://example.org/ns/prod/sa/api" clientAuth
        issue revoked "$EC" "/CN=revoked" "DNS:revoked.internal" clientAuth
        issue expired "$EC" "/CN=expired.example.test" "DNS:expired.example.test" serverAuth \
            -startdate 20200101000000Z -enddate 20200201000000Z
        openssl req -new $EC -nodes -keyout nosan.key -out nosan.csr -subj "/CN=nosan.example.test"
        openssl ca -batch -notext -config ca.cnf -in nosan.csr -out nosan.pem
        openssl ca -config ca.cnf -revoke revoked.pem
        openssl ca -config ca.cnf -gencrl -out crl.pem
        # Another CA, not trusted by the servers.
        openssl req -x509 $EC -nodes -keyout otherca.key -out otherca.pem -days 30 -subj "/CN=other CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -new $EC -nodes -keyout untrusted.key -out untrusted.csr -subj "/CN=untrusted"
        printf 'extendedKeyUsage=clientAuth\n' > untrusted.ext
        openssl x509 -req -in untrusted.csr -CA otherca.pem -CAkey otherca.key -set_serial 7 -days 5 \
            -extfile untrusted.ext -out untrusted.pem
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other.key
        openssl pkey -in server.key -aes256 -passout pass:secret -out encrypted.key
        openssl pkey -in server.key -traditional -out server-traditional.key
        openssl pkey -in rsa.key -traditional -out rsa-traditional.key
        printf 'this is not a certificate\n' > not-pem.txt
        : > empty.pem
        """#
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program to completion (killed after `timeout` seconds), capturing its output.
func runProcess(
    _ executable: String,
    _ arguments: [String],
    currentDirectory: String? = nil,
    stdin: String? = nil,
    timeout: TimeInterval = 30
) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let currentDirectory {
        process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory)
    }
    let output = ProcessOutput()
    let outPipe = Pipe()
    let errPipe = Pipe()
    let inPipe = Pipe()
    process.standardOutput = outPipe
    process.standardError = errPipe
    process.standardInput = inPipe
    outPipe.fileHandleForReading.readabilityHandler = { output.append(stdout: $0.availableData) }
    errPipe.fileHandleForReading.readabilityHandler = { output.append(stderr: $0.availableData) }
    let exited = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in exited.signal() }
    try process.run()
    if let stdin {
        inPipe.fileHandleForWriting.write(Data(stdin.utf8))
    }
    try? inPipe.fileHandleForWriting.close()
    if exited.wait(timeout: .now() + timeout) == .timedOut {
        process.terminate()
        exited.wait()
        throw TestFailure("\(executable) \(arguments) timed out; stderr: \(output.stderr)")
    }
    outPipe.fileHandleForReading.readabilityHandler = nil
    errPipe.fileHandleForReading.readabilityHandler = nil
    output.append(stdout: outPipe.fileHandleForReading.readDataToEndOfFile())
    output.append(stderr: errPipe.fileHandleForReading.readDataToEndOfFile())
    return ProcessResult(status: process.terminationStatus, stdout: output.stdout, stderr: output.stderr)
}

/// Output of a running process, appended from pipe handlers.
final class ProcessOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var out = Data()
    private var err = Data()

    func append(stdout data: Data) {
        self.lock.withLock { self.out.append(data) }
    }

    func append(stderr data: Data) {
        self.lock.withLock { self.err.append(data) }
    }

    var stdout: String { self.lock.withLock { String(decoding: self.out, as: UTF8.self) } }
    var stderr: String { self.lock.withLock { String(decoding: self.err, as: UTF8.self) } }
}
