import Foundation
import SecProxyTLS
import XCTest

final class TLSCertificateTests: TLSTestCase {
    func testLoadChainReturnsLeafThenIntermediates() throws {
        let chain = try TLSCertificate.loadChain(file: self.pki.serverChain)
        XCTAssertEqual(chain.count, 2)
        XCTAssertEqual(chain[0].commonName, "localhost")
        XCTAssertEqual(chain[1].commonName, "secproxy test CA")
        XCTAssertEqual(try TLSCertificate.loadChain(file: self.pki.serverCert).count, 1)
    }

    func testSubjectAltNamesCommonNameAndDisplayName() throws {
        let server = try XCTUnwrap(TLSCertificate.loadChain(file: self.pki.serverCert).first)
        XCTAssertEqual(server.dnsNames, ["localhost", "www.example.test"])  // the IP SAN is not a DNS name
        XCTAssertEqual(server.uris, [])
        XCTAssertEqual(server.displayName, "localhost")

        let client = try XCTUnwrap(TLSCertificate.loadChain(file: self.pki.clientCert).first)
        XCTAssertEqual(client.commonName, "billing")
        XCTAssertEqual(client.dnsNames, ["worker.internal"])
        XCTAssertEqual(client.uris, ["spiffe://example.org/ns/prod/sa/api"])
        XCTAssertEqual(client.displayName, "worker.internal")

        let noSAN = try XCTUnwrap(TLSCertificate.loadChain(file: self.pki.noSANCert).first)
        XCTAssertEqual(noSAN.dnsNames, [])
        XCTAssertEqual(noSAN.displayName, "nosan.example.test")
    }

    func testValidityDates() throws {
        let server = try XCTUnwrap(TLSCertificate.loadChain(file: self.pki.serverCert).first)
        let days = server.notAfter.timeIntervalSinceNow / 86_400
        XCTAssertGreaterThan(days, 29)
        XCTAssertLessThan(days, 31)
        XCTAssertLessThan(server.notBefore, Date())

        let expired = try XCTUnwrap(TLSCertificate.loadChain(file: self.pki.expiredCert).first)
        XCTAssertEqual(expired.notAfterUnixTime, 1_580_515_200)  // 2020-02-01T00:00:00Z
        XCTAssertEqual(expired.notBefore.timeIntervalSince1970, 1_577_836_800)  // 2020-01-01T00:00:00Z
        XCTAssertLessThan(expired.notAfter, Date())
    }

    func testKeyMatchesItsCertificateOnly() throws {
        let server = try XCTUnwrap(TLSCertificate.loadChain(file: self.pki.serverCert).first)
        let rsa = try XCTUnwrap(TLSCertificate.loadChain(file: self.pki.rsaCert).first)
        XCTAssertTrue(try TLSPrivateKey.load(file: self.pki.serverKey).matches(server))
        XCTAssertFalse(try TLSPrivateKey.load(file: self.pki.otherKey).matches(server))
        XCTAssertFalse(try TLSPrivateKey.load(file: self.pki.serverKey).matches(rsa))
        XCTAssertTrue(try TLSPrivateKey.load(file: self.pki.rsaKey).matches(rsa))
    }

    func testTraditionalKeyFormatsLoad() throws {
        let server = try XCTUnwrap(TLSCertificate.loadChain(file: self.pki.serverCert).first)
        let rsa = try XCTUnwrap(TLSCertificate.loadChain(file: self.pki.rsaCert).first)
        XCTAssertTrue(try TLSPrivateKey.load(file: self.pki.traditionalECKey).matches(server))
        XCTAssertTrue(try TLSPrivateKey.load(file: self.pki.traditionalRSAKey).matches(rsa))
        let traditional = try String(contentsOfFile: self.pki.traditionalRSAKey, encoding: .utf8)
        XCTAssertTrue(traditional.hasPrefix("-----BEGIN RSA PRIVATE KEY-----"))
    }

    func testNotPEMEmptyAndMissingFilesAreRejected() {
        XCTAssertEqual(self.reason { _ = try TLSCertificate.loadChain(file: self.pki.notPEMFile) }, "not PEM")
        XCTAssertEqual(self.reason { _ = try TLSPrivateKey.load(file: self.pki.notPEMFile) }, "not PEM")
        XCTAssertEqual(self.reason { _ = try TLSCertificate.loadChain(file: self.pki.emptyFile) }, "empty file")
        XCTAssertEqual(
            self.reason { _ = try TLSCertificate.loadChain(file: self.pki.path("missing.pem")) },
            "cannot read file: No such file or directory"
        )
        // A PEM file without a certificate in it.
        XCTAssertEqual(
            self.reason { _ = try TLSCertificate.loadChain(file: self.pki.serverKey) },
            "no certificate found"
        )
        XCTAssertEqual(self.reason { _ = try TLSPrivateKey.load(file: self.pki.serverCert) }, "no private key found")
    }

    func testCorruptPEMIsAParseError() throws {
        var pem = try String(contentsOfFile: self.pki.serverCert, encoding: .utf8)
        let start = try XCTUnwrap(
            pem.range(of: "\n", range: pem.range(of: "BEGIN CERTIFICATE")!.upperBound..<pem.endIndex)
        )
        pem.replaceSubrange(start.upperBound..<pem.index(start.upperBound, offsetBy: 20), with: "!!!!garbage!!!!!!!!!")
        let path = self.pki.path("corrupt.pem")
        try pem.write(toFile: path, atomically: true, encoding: .utf8)
        let reason = self.reason { _ = try TLSCertificate.loadChain(file: path) }
        XCTAssertNotNil(reason)
        XCTAssertNotEqual(reason, "not PEM")
    }

    func testEncryptedKeyIsRejected() {
        XCTAssertEqual(
            self.reason { _ = try TLSPrivateKey.load(file: self.pki.encryptedKey) },
            "encrypted private keys are not supported"
        )
    }

    func testServerContextRejectsMismatchedKey() {
        let configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.serverChain,
            privateKeyFile: self.pki.otherKey
        )
        XCTAssertEqual(
            self.reason { _ = try TLSServerContext(configuration: configuration) },
            "private key does not match the certificate"
        )
    }

    func testServerContextNamesTheFailingFileAndSetting() {
        var configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.notPEMFile,
            privateKeyFile: self.pki.serverKey
        )
        XCTAssertEqual(
            self.reason { _ = try TLSServerContext(configuration: configuration) },
            "certificate \(self.pki.notPEMFile): not PEM"
        )
        configuration.certificateChainFile = self.pki.serverChain
        configuration.cipherList = "NOT-A-CIPHER"
        XCTAssertEqual(
            self.reason { _ = try TLSServerContext(configuration: configuration) },
            "cipher list: no cipher match"
        )
        configuration.cipherList = ""
        configuration.groups = "P-999"
        XCTAssertNotNil(self.reason { _ = try TLSServerContext(configuration: configuration) }?.hasPrefix("groups: "))
        configuration.groups = "X25519"
        configuration.minimumVersion = .tls13
        configuration.maximumVersion = .tls12
        XCTAssertEqual(
            self.reason { _ = try TLSServerContext(configuration: configuration) },
            "minimum version TLSv1.3 is above maximum version TLSv1.2"
        )
        configuration.minimumVersion = .tls12
        configuration.clientCAFile = self.pki.notPEMFile
        XCTAssertEqual(
            self.reason { _ = try TLSServerContext(configuration: configuration) },
            "client CA \(self.pki.notPEMFile): not PEM"
        )
    }

    func testServerContextExposesLeafCertificates() throws {
        var configuration = TLSServerConfiguration(
            certificateChainFile: self.pki.serverChain,
            privateKeyFile: self.pki.serverKey
        )
        configuration.sniCertificates = [TLSSNICertificate(chainFile: self.pki.apiCert, keyFile: self.pki.apiKey)]
        let context = try TLSServerContext(configuration: configuration)
        XCTAssertEqual(context.certificates.map(\.displayName), ["localhost", "api.example.org"])
        XCTAssertEqual(context.certificateChain.count, 2)
    }

    func testValidateCipherList() {
        XCTAssertNil(TLSSettingsValidation.validateCipherList(""))
        XCTAssertNil(TLSSettingsValidation.validateCipherList("ECDHE+AESGCM"))
        XCTAssertNil(
            TLSSettingsValidation.validateCipherList("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
        )
        XCTAssertEqual(TLSSettingsValidation.validateCipherList("NOPE-NOT-A-CIPHER")?.reason, "no cipher match")
    }

    func testValidateCipherSuites() {
        XCTAssertNil(TLSSettingsValidation.validateCipherSuites(""))
        XCTAssertNil(TLSSettingsValidation.validateCipherSuites("TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"))
        XCTAssertNotNil(TLSSettingsValidation.validateCipherSuites("TLS_NOT_A_SUITE"))
    }

    func testValidateGroups() {
        XCTAssertNil(TLSSettingsValidation.validateGroups("X25519:P-256:P-384"))
        XCTAssertNil(TLSSettingsValidation.validateGroups(""))
        let error = TLSSettingsValidation.validateGroups("X25519:P-999")
        XCTAssertNotNil(error)
        XCTAssertFalse(error?.reason.isEmpty ?? true)
    }

    func testValidateCAAndCRLFiles() {
        XCTAssertNil(TLSSettingsValidation.validateCAFile(self.pki.caFile))
        XCTAssertEqual(TLSSettingsValidation.validateCAFile(self.pki.notPEMFile)?.reason, "not PEM")
        XCTAssertEqual(TLSSettingsValidation.validateCAFile(self.pki.emptyFile)?.reason, "empty file")
        XCTAssertEqual(TLSSettingsValidation.validateCAFile(self.pki.serverKey)?.reason, "no certificate found")
        XCTAssertNil(TLSSettingsValidation.validateCRLFile(self.pki.crlFile))
        XCTAssertEqual(TLSSettingsValidation.validateCRLFile(self.pki.caFile)?.reason, "no CRL found")
        XCTAssertEqual(TLSSettingsValidation.validateCRLFile(self.pki.notPEMFile)?.reason, "not PEM")
    }

    func testErrorDescriptionCarriesTheOpenSSLStack() {
        let error = TLSSettingsValidation.validateCipherList("NOPE")
        XCTAssertEqual(error?.reason, "no cipher match")
        XCTAssertTrue(error?.description.contains("error:") ?? false, error?.description ?? "")
    }

    func testProtocolVersionParsing() {
        XCTAssertEqual(TLSProtocolVersion("1.2"), .tls12)
        XCTAssertEqual(TLSProtocolVersion("1.3"), .tls13)
        XCTAssertEqual(TLSProtocolVersion("TLSv1.3"), .tls13)
        XCTAssertNil(TLSProtocolVersion("1.1"))
        XCTAssertEqual(TLSProtocolVersion.tls12.description, "TLSv1.2")
    }

    /// The reason of the `TLSError` `body` throws, nil if it does not throw.
    private func reason(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> String? {
        do {
            try body()
            return nil
        } catch let error as TLSError {
            return error.reason
        } catch {
            XCTFail("not a TLSError: \(error)", file: file, line: line)
            return nil
        }
    }
}
