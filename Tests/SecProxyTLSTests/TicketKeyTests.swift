import Foundation
import NIOCore
import NIOPosix
import XCTest

@testable import SecProxyTLS

/// Session ticket keys: the key file format, resumption with file keys across servers (the fleet
/// case), an older key still decrypting, and the rotation of random keys.
final class TicketKeyTests: TLSTestCase {
    // MARK: - Helpers

    /// `openssl rand -base64 80`, as an operator makes a key (two lines: openssl wraps at 64 columns).
    func opensslRandKey() throws -> String {
        let result = try runProcess("/usr/bin/env", ["openssl", "rand", "-base64", "80"])
        XCTAssertEqual(result.status, 0, result.stderr)
        return result.stdout
    }

    /// Writes `text` to a new file in the PKI directory and returns its path.
    func writeFile(_ text: String) throws -> String {
        let path = self.pki.path("tickets-\(UUID().uuidString.prefix(8)).keys")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The reason `TLSTicketKey.load(file:)` gives for a file holding `text`.
    func loadError(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let path = try self.writeFile(text)
        do {
            let keys = try TLSTicketKey.load(file: path)
            XCTFail("loaded \(keys.count) keys from a bad file", file: file, line: line)
            return ""
        } catch let error as TLSError {
            XCTAssertTrue(error.reason.hasPrefix("ticket key file \(path): "), error.reason, file: file, line: line)
            return String(error.reason.dropFirst("ticket key file \(path): ".count))
        }
    }

    func serverContext(
        keys: [TLSTicketKey] = [],
        sni: Bool = false
    ) throws -> TLSServerContext {
        var configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.serverChain,
            privateKeyFile: self.pki.serverKey
        )
        configuration.ticketKeys = keys
        if sni {
            configuration.sniCertificates = [TLSSNICertificate(chainFile: self.pki.apiCert, keyFile: self.pki.apiKey)]
        }
        return try TLSServerContext(configuration: configuration)
    }

    func startServer(_ context: TLSServerContext) throws -> TestTLSServer {
        let server = try TestTLSServer(group: self.group, context: context)
        self.servers.append(server)
        return server
    }

    func clientContext(_ version: TLSProtocolVersion) throws -> TLSClientContext {
        var configuration = TLSClientConfiguration()
        configuration.trustRootsFile = self.pki.caFile
        configuration.minimumVersion = version
        configuration.maximumVersion = version
        return try TLSClientContext(configuration: configuration)
    }

    /// Connects, round-trips a line (TLS 1.3 tickets arrive after the handshake), closes, and says
    /// whether the session was resumed.
    @discardableResult
    func handshake(
        _ server: TestTLSServer,
        _ client: TLSClientContext,
        serverName: String = "localhost"
    ) throws -> Bool {
        let connection = try TestClient(group: self.group, port: server.port, context: client, serverName: serverName)
        self.clients.append(connection)
        let info = try connection.waitForHandshake()
        _ = try awaitFuture(connection.write("ping"))
        try waitUntil("echo") { connection.log.receivedCount >= 4 }
        connection.close()
        return info.resumed
    }

    // MARK: - Key file

    func testLoadReadsOpenSSLRandOutputCommentsBlankLinesAndCRLF() throws {
        let first = try self.opensslRandKey()
        XCTAssertEqual(first.split(separator: "\n").count, 2, "openssl wraps base64 at 64 columns")
        let second = Data((0..<80).map { UInt8($0) }).base64EncodedString()
        let path = try self.writeFile(
            "# fleet ticket keys, newest first\n\n" + first + "\n   \n# previous\r\n" + second + "\r\n"
        )
        let keys = try TLSTicketKey.load(file: path)
        XCTAssertEqual(keys.count, 2)
        let firstBytes = [UInt8](Data(base64Encoded: first.split(separator: "\n").joined())!)
        XCTAssertEqual(keys[0].name, Array(firstBytes[0..<16]))
        XCTAssertEqual(keys[0], try TLSTicketKey(bytes: firstBytes))
        keys[0].withKeys { aes, hmac in
            XCTAssertEqual(Array(UnsafeBufferPointer(start: aes, count: 32)), Array(firstBytes[16..<48]))
            XCTAssertEqual(Array(UnsafeBufferPointer(start: hmac, count: 32)), Array(firstBytes[48..<80]))
        }
        XCTAssertEqual(keys[1].name, Array(0..<16))
        keys[1].withKeys { aes, hmac in
            XCTAssertEqual(Array(UnsafeBufferPointer(start: aes, count: 32)), Array(16..<48))
            XCTAssertEqual(Array(UnsafeBufferPointer(start: hmac, count: 32)), Array(48..<80))
        }
        XCTAssertEqual(keys[1], try TLSTicketKey(bytes: Array(0..<80)))
        XCTAssertNotEqual(keys[0], keys[1])
    }

    func testLoadErrorsSayWhichLineIsWrong() throws {
        let good = Data((0..<80).map { UInt8($0) }).base64EncodedString()
        let goodWrapped = String(good.prefix(64)) + "\n" + String(good.dropFirst(64))
        let short = Data(repeating: 7, count: 79).base64EncodedString()
        let long = Data(repeating: 7, count: 81).base64EncodedString()

        XCTAssertEqual(try self.loadError(good + "\nthis is not base64!\n"), "line 2: not base64")
        XCTAssertEqual(
            try self.loadError("# one\n" + short + "\n"),
            "line 2: key is 79 bytes, expected 80 (`openssl rand -base64 80`)"
        )
        XCTAssertEqual(
            try self.loadError(long + "\n"),
            "line 1: not a ticket key (expected base64 of 80 bytes: `openssl rand -base64 80`)"
        )
        XCTAssertEqual(
            try self.loadError(good + "\n" + String(good.prefix(64)) + "\n\n"),
            "line 2: key is cut short (base64 of 80 bytes, 108 characters ending in '=')"
        )
        XCTAssertEqual(
            try self.loadError(String(good.prefix(64)) + "\n# comment\n" + String(good.dropFirst(64)) + "\n"),
            "line 1: key is cut short (base64 of 80 bytes, 108 characters ending in '=')"
        )
        XCTAssertEqual(
            try self.loadError("\n" + goodWrapped + "\n" + goodWrapped + "\n"),
            "lines 4-5: repeats the name of an earlier key"
        )
        XCTAssertEqual(
            try self.loadError("# " + "A" + good.dropFirst() + "\n" + String(repeating: "=", count: 108) + "\n"),
            "line 2: not base64"
        )
        XCTAssertEqual(try self.loadError(""), "no keys (one per line: `openssl rand -base64 80`)")
        XCTAssertEqual(try self.loadError("# nothing yet\n\n"), "no keys (one per line: `openssl rand -base64 80`)")

        let missing = self.pki.path("no-such.keys")
        XCTAssertThrowsError(try TLSTicketKey.load(file: missing)) { error in
            XCTAssertEqual(
                (error as? TLSError)?.reason,
                "ticket key file \(missing): cannot read file: No such file or directory"
            )
        }
        XCTAssertEqual(
            TLSSettingsValidation.validateTicketKeyFile(missing)?.reason,
            "ticket key file \(missing): cannot read file: No such file or directory"
        )
        XCTAssertNil(TLSSettingsValidation.validateTicketKeyFile(try self.writeFile(goodWrapped + "\n")))
        XCTAssertThrowsError(try TLSTicketKey(bytes: Array(repeating: 1, count: 48)))
        XCTAssertThrowsError(try TLSTicketKey(name: [1], aesKey: [], hmacKey: []))
    }

    func testDescriptionsNeverShowKeyMaterial() throws {
        let bytes = Array(repeating: UInt8(0xAB), count: 16) + Array(repeating: UInt8(0xCD), count: 64)
        let key = try TLSTicketKey(bytes: bytes)
        var configuration = TLSServerConfiguration(certificateChainFile: "a", privateKeyFile: "b")
        configuration.ticketKeys = [key]
        var dumped = ""
        dump(configuration, to: &dumped)
        for text in [
            key.description, String(reflecting: key), "\(configuration)", String(reflecting: configuration), dumped,
        ] {
            XCTAssertTrue(text.contains("abababababababababababababababab"), text)
            XCTAssertFalse(text.lowercased().contains("cdcd"), text)
            XCTAssertFalse(text.contains("205"), text)  // 0xCD as a decimal array element
        }
        // A bad line's text never reaches the error.
        let secret = Data(repeating: 0xCD, count: 79).base64EncodedString()
        let reason = try self.loadError(secret + "\n")
        XCTAssertFalse(reason.contains(secret.prefix(20)), reason)
    }

    // MARK: - Resumption with file keys

    func testTLS12TicketResumptionWithAFileKey() throws {
        try self.checkFileKeyResumption(.tls12)
    }

    func testTLS13TicketResumptionWithAFileKey() throws {
        try self.checkFileKeyResumption(.tls13)
    }

    private func checkFileKeyResumption(_ version: TLSProtocolVersion) throws {
        let keys = try TLSTicketKey.load(file: self.writeFile(self.opensslRandKey()))
        let server = try self.startServer(self.serverContext(keys: keys))
        let client = try self.clientContext(version)
        XCTAssertFalse(try self.handshake(server, client))
        XCTAssertTrue(try self.handshake(server, client))
        XCTAssertTrue(try self.handshake(server, client))
        XCTAssertEqual(server.log.handshakes.map(\.version), Array(repeating: version.description, count: 3))
    }

    func testServersSharingAKeyFileResumeEachOthersTickets() throws {
        let file = try self.writeFile(self.opensslRandKey() + self.opensslRandKey())
        for version in [TLSProtocolVersion.tls12, .tls13] {
            let first = try self.startServer(self.serverContext(keys: TLSTicketKey.load(file: file)))
            let second = try self.startServer(self.serverContext(keys: TLSTicketKey.load(file: file)))
            let client = try self.clientContext(version)
            XCTAssertFalse(try self.handshake(first, client), "\(version)")
            XCTAssertTrue(try self.handshake(second, client), "\(version): the ticket of one server resumes on another")
            XCTAssertTrue(try self.handshake(first, client), "\(version)")
        }
    }

    func testServersWithRandomKeysDoNotResumeEachOthersTickets() throws {
        for version in [TLSProtocolVersion.tls12, .tls13] {
            let first = try self.startServer(self.serverContext())
            let second = try self.startServer(self.serverContext())
            let client = try self.clientContext(version)
            XCTAssertFalse(try self.handshake(first, client), "\(version)")
            XCTAssertFalse(try self.handshake(second, client), "\(version)")
            XCTAssertTrue(try self.handshake(second, client), "\(version): a server resumes its own tickets")
        }
    }

    func testAnOlderKeyStillDecryptsAndTheTicketIsRenewedUnderTheCurrentKey() throws {
        let a = try TLSTicketKey.random()
        let b = try TLSTicketKey.random()
        for version in [TLSProtocolVersion.tls12, .tls13] {
            let issuedUnderB = try self.startServer(self.serverContext(keys: [b]))
            let currentA = try self.startServer(self.serverContext(keys: [a, b]))
            let onlyA = try self.startServer(self.serverContext(keys: [a]))
            let client = try self.clientContext(version)
            XCTAssertFalse(try self.handshake(issuedUnderB, client), "\(version)")
            XCTAssertTrue(try self.handshake(currentA, client), "\(version): [A, B] decrypts a ticket of B")
            // The resumption above renewed the ticket under A, which a server knowing only A accepts.
            XCTAssertTrue(try self.handshake(onlyA, client), "\(version): the renewed ticket is under A")
        }
    }

    func testSNIContextsShareTheTicketKeys() throws {
        let keys = [try TLSTicketKey.random()]
        let first = try self.startServer(self.serverContext(keys: keys, sni: true))
        let second = try self.startServer(self.serverContext(keys: keys, sni: true))
        for version in [TLSProtocolVersion.tls12, .tls13] {
            let client = try self.clientContext(version)
            XCTAssertFalse(try self.handshake(first, client, serverName: "api.example.org"), "\(version)")
            XCTAssertTrue(try self.handshake(second, client, serverName: "api.example.org"), "\(version)")
            XCTAssertTrue(try self.handshake(first, client, serverName: "api.example.org"), "\(version)")
        }
    }

    // MARK: - Rotation of random keys

    func testRotationKeepsThePreviousKeyForOneMoreRotation() throws {
        for version in [TLSProtocolVersion.tls12, .tls13] {
            let context = try self.serverContext()
            let server = try self.startServer(context)
            let resumesAfterOne = try self.clientContext(version)
            let resumesAfterTwo = try self.clientContext(version)
            XCTAssertFalse(try self.handshake(server, resumesAfterOne))
            XCTAssertFalse(try self.handshake(server, resumesAfterTwo))
            context.rotateTicketKeys()
            XCTAssertTrue(try self.handshake(server, resumesAfterOne), "\(version): the previous key still decrypts")
            context.rotateTicketKeys()
            XCTAssertFalse(try self.handshake(server, resumesAfterTwo), "\(version): two rotations drop a key")
            // The connection after the first rotation got a ticket under the then-current key.
            XCTAssertTrue(try self.handshake(server, resumesAfterOne), "\(version)")
        }
    }

    func testRotateTicketKeysLeavesFileKeysAlone() throws {
        let context = try self.serverContext(keys: [try TLSTicketKey.random()])
        let server = try self.startServer(context)
        let client = try self.clientContext(.tls13)
        XCTAssertFalse(try self.handshake(server, client))
        context.rotateTicketKeys()
        context.rotateTicketKeys()
        XCTAssertTrue(try self.handshake(server, client))
    }

    func testTicketsOffIgnoresKeysAndRotation() throws {
        var configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.serverChain,
            privateKeyFile: self.pki.serverKey
        )
        configuration.sessionTickets = false
        configuration.ticketKeys = [try TLSTicketKey.random()]
        let context = try TLSServerContext(configuration: configuration)
        context.rotateTicketKeys()
        let server = try self.startServer(context)
        // TLS 1.2 resumes from the server's session cache instead.
        let client = try self.clientContext(.tls12)
        XCTAssertFalse(try self.handshake(server, client))
        XCTAssertTrue(try self.handshake(server, client))
    }

    func testRandomKeysRotateLazilyEveryInterval() throws {
        let start = ContinuousClock.now
        let store = try TLSTicketKeyStore(rotatingEvery: .seconds(3600), now: start)
        let k0 = store.encryptionKey(now: start)
        func lookup(_ key: TLSTicketKey, at offset: Duration) -> Bool? {
            key.name.withUnsafeBufferPointer { store.decryptionKey(named: $0, now: start + offset)?.isCurrent }
        }
        XCTAssertEqual(store.encryptionKey(now: start + .seconds(3599)), k0)
        XCTAssertEqual(lookup(k0, at: .seconds(3599)), true)

        // Issuing after an hour makes a new current key; the old one is still accepted, for renewal.
        let k1 = store.encryptionKey(now: start + .seconds(3700))
        XCTAssertNotEqual(k1, k0)
        XCTAssertEqual(lookup(k0, at: .seconds(3700)), false)
        XCTAssertEqual(lookup(k1, at: .seconds(3700)), true)

        // The schedule holds: the next rotation is at two hours, not an hour after the late one.
        let k2 = store.encryptionKey(now: start + .seconds(7200))
        XCTAssertNotEqual(k2, k1)
        XCTAssertNil(lookup(k0, at: .seconds(7200)), "a key decrypts for two intervals at most")
        XCTAssertEqual(lookup(k1, at: .seconds(7200)), false)

        // Idle for more than an interval past the due rotation: no old key survives.
        XCTAssertNil(lookup(k1, at: .seconds(3 * 3600 + 3600)))
        XCTAssertNil(lookup(k2, at: .seconds(3 * 3600 + 3600)))
        let k3 = store.encryptionKey(now: start + .seconds(3 * 3600 + 3600))
        XCTAssertFalse([k0, k1, k2].contains(k3))
    }

    func testFixedKeysNeverRotate() throws {
        let keys = [try TLSTicketKey.random(), try TLSTicketKey.random()]
        let store = TLSTicketKeyStore(fixed: keys)
        let later = ContinuousClock.now + .seconds(100 * 3600)
        store.rotate(now: later)
        XCTAssertEqual(store.encryptionKey(now: later), keys[0])
        XCTAssertEqual(
            keys[1].name.withUnsafeBufferPointer { store.decryptionKey(named: $0, now: later)?.isCurrent },
            false
        )
    }
}
