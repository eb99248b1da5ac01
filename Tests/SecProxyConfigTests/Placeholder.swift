import XCTest
final class SecProxyConfigTestsPlaceholder: XCTestCase { func testNothing() {} }
