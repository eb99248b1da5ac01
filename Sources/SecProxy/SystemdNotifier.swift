import Foundation

/// Sends sd_notify(3) datagrams to `$NOTIFY_SOCKET`; does nothing when systemd did not set it.
final class SystemdNotifier: Sendable {
    private let socketPath: String?
    /// Half of `$WATCHDOG_USEC` (when meant for this process): how often to send `WATCHDOG=1`.
    let watchdogInterval: Duration?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path
        fileDescriptorStore = path != nil && (environment["FDSTORE"].flatMap(Int.init) ?? 0) > 0
        if path != nil, let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
            environment["WATCHDOG_PID"].flatMap(Int32.init).map({ $0 == getpid() }) ?? true
        {
            watchdogInterval = .microseconds(Int64(usec / 2))
        } else {
            watchdogInterval = nil
        }
    }

    var isEnabled: Bool { socketPath != nil }

    /// Whether `$FDSTORE` asks for listening sockets to be kept in systemd's file-descriptor store.
    let fileDescriptorStore: Bool

    /// Sends `state` (newline-separated `KEY=VALUE` assignments). Failures are ignored, as sd_notify does.
    func notify(_ state: String) {
        notify(state, descriptors: [])
    }

    /// Stores a listening socket in systemd's file-descriptor store under `name`, so that a restart
    /// (binary upgrade) gets it back as `LISTEN_FDS` and no connection is refused meanwhile.
    func storeListeningSocket(_ descriptor: CInt, name: String) {
        guard fileDescriptorStore else { return }
        notify("FDSTORE=1\nFDNAME=\(name)", descriptors: [descriptor])
    }

    /// Drops a listener's socket from the store (the listener is gone from the configuration).
    func removeListeningSocket(name: String) {
        guard fileDescriptorStore else { return }
        notify("FDSTOREREMOVE=1\nFDNAME=\(name)")
    }

    /// Sends `state` with `descriptors` attached (SCM_RIGHTS).
    func notify(_ state: String, descriptors: [CInt]) {
        guard let socketPath else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketPath.utf8)
        // "@name" is an abstract socket: a leading NUL byte instead of "@".
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count)
        var message = Array(state.utf8)
        // Control message for SCM_RIGHTS, laid out as CMSG_SPACE/CMSG_LEN do (the macros do not import).
        let align = MemoryLayout<Int>.size
        func aligned(_ n: Int) -> Int { (n + align - 1) & ~(align - 1) }
        let headerSize = aligned(MemoryLayout<cmsghdr>.size)
        let dataSize = descriptors.count * MemoryLayout<CInt>.size
        var control = [UInt8](repeating: 0, count: descriptors.isEmpty ? 0 : headerSize + aligned(dataSize))
        if !descriptors.isEmpty {
            control.withUnsafeMutableBytes { raw in
                var header = cmsghdr()
                header.cmsg_len = Int(headerSize + dataSize)
                header.cmsg_level = SOL_SOCKET
                header.cmsg_type = Int32(SCM_RIGHTS)
                raw.storeBytes(of: header, as: cmsghdr.self)
                for (index, descriptor) in descriptors.enumerated() {
                    raw.storeBytes(of: descriptor, toByteOffset: headerSize + index * MemoryLayout<CInt>.size, as: CInt.self)
                }
            }
        }
        _ = withUnsafeMutablePointer(to: &address) { addressPointer in
            message.withUnsafeMutableBytes { bytes in
                control.withUnsafeMutableBytes { controlBytes in
                    var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
                    return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                        var header = msghdr()
                        header.msg_name = UnsafeMutableRawPointer(addressPointer)
                        header.msg_namelen = length
                        header.msg_iov = vectorPointer
                        header.msg_iovlen = 1
                        header.msg_control = controlBytes.isEmpty ? nil : controlBytes.baseAddress
                        header.msg_controllen = controlBytes.count
                        return sendmsg(fd, &header, Int32(MSG_NOSIGNAL))
                    }
                }
            }
        }
    }

    /// `MONOTONIC_USEC=` value for `RELOADING=1`.
    static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}
