import XCTest
final class SecProxyTLSTestsPlaceholder: XCTestCase { func testNothing() {} }
