import Foundation

/// Listening sockets passed by systemd (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`), by name:
/// socket activation, or the sockets of the file-descriptor store given back after a restart.
struct SocketActivation {
    /// The first passed descriptor (`SD_LISTEN_FDS_START`).
    static let firstDescriptor: CInt = 3

    /// Descriptor by listener name (`FileDescriptorName=` / `FDNAME=`).
    private(set) var descriptors: [String: CInt] = [:]

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let pid = environment["LISTEN_PID"].flatMap(Int32.init), pid == getpid(),
            let count = environment["LISTEN_FDS"].flatMap(Int32.init), count > 0
        else { return }
        let names = (environment["LISTEN_FDNAMES"] ?? "").split(separator: ":", omittingEmptySubsequences: false)
        for index in 0..<count {
            let descriptor = Self.firstDescriptor + index
            let name = Int(index) < names.count ? String(names[Int(index)]) : "unknown"
            if descriptors[name] == nil {
                descriptors[name] = descriptor
            } else {
                close(descriptor)
            }
        }
        // Not for our children.
        unsetenv("LISTEN_PID")
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_FDNAMES")
    }

    /// The passed socket for `name`, handed over once.
    mutating func take(_ name: String) -> CInt? {
        descriptors.removeValue(forKey: name)
    }

    /// Closes the passed sockets no listener took; returns their names.
    mutating func closeRest() -> [String] {
        defer { descriptors = [:] }
        for descriptor in descriptors.values { close(descriptor) }
        return Array(descriptors.keys)
    }
}
