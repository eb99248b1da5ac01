import Foundation
import XCTest

@testable import SecProxyTLS

/// `TLSSecretBytes`: where private key text and ticket keys are read to and parsed in place, wiped when
/// released; it reads only regular files, without blocking.
final class TLSSecretBytesTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        self.directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("secproxy-secret-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    func bytes(_ secret: TLSSecretBytes) -> [UInt8] {
        secret.withUnsafeBytes { Array($0) }
    }

    func testLoadReadsTheWholeFile() throws {
        for size in [0, 1, 4095, 4096, 200_000] {
            let content = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let path = self.directory + "/file-\(size)"
            try Data(content).write(to: URL(fileURLWithPath: path))
            let secret = try TLSSecretBytes.load(file: path)
            XCTAssertEqual(secret.count, size)
            XCTAssertEqual(self.bytes(secret), content, "\(size) bytes")
        }
    }

    func testOnlyRegularFilesAreReadAndAFIFONeverBlocks() throws {
        let fifo = self.directory + "/key.fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        for path in [fifo, self.directory!] {
            // No writer on the FIFO: a blocking open or read would hang here.
            XCTAssertThrowsError(try TLSSecretBytes.load(file: path)) { error in
                XCTAssertEqual((error as? TLSError)?.reason, "cannot read file: not a regular file", path)
            }
        }
        XCTAssertThrowsError(try TLSPrivateKey.load(file: fifo)) { error in
            XCTAssertEqual((error as? TLSError)?.reason, "cannot read file: not a regular file")
        }
        XCTAssertThrowsError(try TLSTicketKey.load(file: fifo)) { error in
            XCTAssertEqual((error as? TLSError)?.reason, "ticket key file \(fifo): cannot read file: not a regular file")
        }
        XCTAssertThrowsError(try TLSSecretBytes.load(file: self.directory + "/missing")) { error in
            XCTAssertEqual((error as? TLSError)?.reason, "cannot read file: No such file or directory")
        }
    }

    func testRemoveAllWipesTheStorage() throws {
        let secret = TLSSecretBytes(copying: Array(repeating: UInt8(0xAB), count: 64))
        XCTAssertEqual(self.bytes(secret), Array(repeating: 0xAB, count: 64))
        secret.removeAll()
        XCTAssertEqual(secret.count, 0)
        let storage = secret.withUnsafeMutableStorage { Array($0) }
        XCTAssertEqual(storage, Array(repeating: 0, count: 64), "the bytes themselves are zeroed, not just forgotten")
    }

    func testAppendAndContains() {
        let secret = TLSSecretBytes(capacity: 8)
        XCTAssertTrue(Array("-----BE".utf8).withUnsafeBytes { secret.append($0) })
        XCTAssertFalse(Array("GIN ".utf8).withUnsafeBytes { secret.append($0) }, "does not fit: nothing appended")
        XCTAssertEqual(secret.count, 7)
        XCTAssertTrue(Array("G".utf8).withUnsafeBytes { secret.append($0) })
        XCTAssertTrue(secret.contains("-----BEG"))
        XCTAssertTrue(secret.contains("BEG"))
        XCTAssertFalse(secret.contains("BEGIN"))
        XCTAssertTrue(secret.contains(""))
    }
}
