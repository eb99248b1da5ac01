import XCTest
final class SecProxyCoreTestsPlaceholder: XCTestCase { func testNothing() {} }
