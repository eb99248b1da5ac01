import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The text of an error for a log line's `error` field.
public enum ErrorText {
    /// `error`'s description; for NIO's `IOError` without the stray parenthesis its description has after
    /// the system's message ("connect: Connection refused) (errno: 111)").
    public static func of(_ error: any Error) -> String {
        let text = "\(error)"
        guard let ioError = error as? IOError, let message = strerror(ioError.errnoCode) else { return text }
        let systemMessage = String(cString: message)
        return text.replacing(systemMessage + ") (errno:", with: systemMessage + " (errno:")
    }
}
