import XCTest
final class SecProxyCLITestsPlaceholder: XCTestCase { func testNothing() {} }
