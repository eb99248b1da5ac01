import NIOPosix
import XCTest

/// Base of the TLS tests: one throwaway PKI per test class (making certificates with openssl is slow),
/// removed after the class's last test; an event loop group per test, and the servers and clients a test
/// starts, closed in `tearDown`.
class TLSTestCase: XCTestCase {
    nonisolated(unsafe) private static var pkis: [ObjectIdentifier: TLSTestPKI] = [:]

    /// Makes the class's extra files in its PKI once, before its first test (e.g. OCSP responses).
    class func preparePKI(_ pki: TLSTestPKI) throws {}

    /// Event-loop threads of `group`.
    class var loopThreads: Int { 2 }

    override class func setUp() {
        super.setUp()
        do {
            let pki = try TLSTestPKI()
            try preparePKI(pki)
            pkis[ObjectIdentifier(self)] = pki
        } catch {
            fatalError("\(error)")
        }
    }

    override class func tearDown() {
        pkis.removeValue(forKey: ObjectIdentifier(self))?.remove()
        super.tearDown()
    }

    /// The PKI of this test class.
    class var sharedPKI: TLSTestPKI { pkis[ObjectIdentifier(self)]! }

    var pki: TLSTestPKI { Self.sharedPKI }
    var group: MultiThreadedEventLoopGroup!
    var servers: [TestTLSServer] = []
    var clients: [TestClient] = []

    override func setUp() {
        super.setUp()
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: Self.loopThreads)
    }

    override func tearDown() {
        for client in self.clients { client.close() }
        for server in self.servers { server.close() }
        self.clients = []
        self.servers = []
        try? self.group.syncShutdownGracefully()
        self.group = nil
        super.tearDown()
    }
}
