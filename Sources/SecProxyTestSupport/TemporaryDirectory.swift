import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fresh directory under /tmp, removed with everything in it by `cleanup()` or on deinit.
public final class TemporaryDirectory: @unchecked Sendable {
    /// The directory's absolute path.
    public let path: String
    private let lock = NSLock()
    private var removed = false

    /// Creates `/tmp/<prefix>-XXXXXX`.
    public init(prefix: String = "secproxy-test") throws {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw SubprocessError("mkdtemp failed: \(String(cString: strerror(errno)))")
        }
        self.path = String(cString: made)
    }

    deinit { cleanup() }

    /// The directory as a file URL.
    public var url: URL { URL(fileURLWithPath: path, isDirectory: true) }

    /// The absolute path of `name` inside the directory (not created).
    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Writes `contents` to `name` (sub-directories created) with permission bits `mode`; returns the path.
    @discardableResult
    public func write(_ name: String, _ contents: String, mode: Int = 0o644) throws -> String {
        try write(name, Data(contents.utf8), mode: mode)
    }

    /// Writes `data` to `name` (sub-directories created) with permission bits `mode`; returns the path.
    @discardableResult
    public func write(_ name: String, _ data: Data, mode: Int = 0o644) throws -> String {
        let target = file(name)
        let parent = (target as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: target))
        try setMode(target, mode)
        return target
    }

    /// Creates the sub-directory `name`; returns its path.
    @discardableResult
    public func makeDirectory(_ name: String) throws -> String {
        let target = file(name)
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        return target
    }

    /// Removes the directory and its contents (idempotent).
    public func cleanup() {
        let shouldRemove = lock.withLock { () -> Bool in
            defer { removed = true }
            return !removed
        }
        if shouldRemove { try? FileManager.default.removeItem(atPath: path) }
    }
}

/// Sets the permission bits of `path`.
public func setMode(_ path: String, _ mode: Int) throws {
    guard chmod(path, mode_t(mode)) == 0 else {
        throw SubprocessError("chmod \(String(mode, radix: 8)) \(path): \(String(cString: strerror(errno)))")
    }
}

/// The permission bits of `path`.
public func fileMode(_ path: String) throws -> Int {
    var info = stat()
    guard stat(path, &info) == 0 else {
        throw SubprocessError("stat \(path): \(String(cString: strerror(errno)))")
    }
    return Int(info.st_mode) & 0o7777
}
