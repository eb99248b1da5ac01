import Foundation
import SecProxyConfig

/// `watch_files`: notices a change to the configuration file or any file it names (certificates,
/// keys, CAs, CRLs, OCSP responses, ticket keys), e.g. after certbot renewed a certificate.
///
/// Polls `stat` (inode, size, modification time): cheap, works for files replaced by rename as well
/// as rewritten in place, and needs no inotify descriptor per file.
struct FileWatcher {
    /// How often the files are looked at; a change is picked up within this (SPEC: within 5 s).
    static let interval: Duration = .seconds(2)

    struct Stamp: Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var seconds: Int
        var nanoseconds: Int
    }

    /// The state last acted upon, by path; nil stamp = missing.
    private(set) var stamps: [String: Stamp?] = [:]

    /// Starts from the files of `configuration` (at `path`) as they are now.
    init(path: String, configuration: ProxyConfiguration) {
        stamps = Self.take(Self.files(path: path, configuration: configuration))
    }

    /// The first file that differs from the last state acted upon, if any; the new state becomes the
    /// one acted upon, so a reload that fails is retried only once something changes again (a
    /// half-finished update: the next write completes it).
    mutating func changedFile(path: String, configuration: ProxyConfiguration) -> String? {
        let now = Self.take(Self.files(path: path, configuration: configuration))
        defer { stamps = now }
        return now.keys.sorted().first { now[$0] != stamps[$0] }
    }

    static func files(path: String, configuration: ProxyConfiguration) -> [String] {
        var files = [path]
        for listener in configuration.listeners {
            if let tls = listener.tls {
                files += [tls.cert.path, tls.key.path]
                files += tls.sni.flatMap { [$0.cert.path, $0.key.path] }
                files += [tls.clientCA, tls.clientCRL, tls.ticketKeyFile, tls.ocspResponse].compactMap { $0?.path }
            }
            if let backendTLS = listener.backendTLS {
                files += [backendTLS.ca, backendTLS.cert, backendTLS.key].compactMap { $0?.path }
            }
        }
        return files
    }

    private static func take(_ files: [String]) -> [String: Stamp?] {
        var stamps: [String: Stamp?] = [:]
        for file in files {
            var info = stat()
            if stat(file, &info) == 0 {
                stamps[file] = Stamp(
                    device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                    seconds: info.st_mtim.tv_sec, nanoseconds: info.st_mtim.tv_nsec
                )
            } else {
                stamps[file] = .some(nil)
            }
        }
        return stamps
    }
}
