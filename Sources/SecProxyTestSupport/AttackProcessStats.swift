import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `/proc` says about a process (Linux): open descriptors, resident memory, CPU time; and its descriptor limit.
public enum AttackProcessStats {
    /// Number of open file descriptors (`ls /proc/PID/fd | wc -l`).
    public static func openFileCount(_ pid: Int32) throws -> Int {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        } catch {
            throw SubprocessError("cannot list /proc/\(pid)/fd: \(error)")
        }
    }

    /// `VmRSS` of /proc/PID/status, in bytes.
    public static func residentBytes(_ pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, let kib = Int(fields[1]) { return kib * 1024 }
        }
        throw SubprocessError("no VmRSS in /proc/\(pid)/status")
    }

    /// User plus system CPU time (utime + stime of /proc/PID/stat), in seconds.
    public static func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
        guard let close = stat.lastIndex(of: ")") else { throw SubprocessError("bad /proc/\(pid)/stat: \(stat)") }
        let fields = stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // After ")": state is field 3, so utime (14) and stime (15) are at offsets 11 and 12.
        guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else {
            throw SubprocessError("bad /proc/\(pid)/stat: \(stat)")
        }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (utime + stime) / (ticks > 0 ? ticks : 100)
    }

    /// This process's RLIMIT_NOFILE (soft, hard).
    public static func openFileLimit() -> (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        #if canImport(Glibc)
        _ = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        #else
        _ = getrlimit(RLIMIT_NOFILE, &limit)
        #endif
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    /// Raises this process's soft RLIMIT_NOFILE to its hard limit (children started afterwards inherit it);
    /// returns the soft limit now in force.
    @discardableResult
    public static func raiseOpenFileLimitToHard() -> UInt64 {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(resource, &limit)
            _ = getrlimit(resource, &limit)
        }
        return UInt64(limit.rlim_cur)
    }

    /// Sets the soft RLIMIT_NOFILE of the running process `pid` (same user) with util-linux `prlimit`; the hard
    /// limit is left alone, so the soft one can be raised again.
    public static func setOpenFileSoftLimit(pid: Int32, _ soft: Int) throws {
        guard let prlimit = Subprocess.which("prlimit") else {
            throw SubprocessError("the prlimit command is not installed (apt-get install util-linux)")
        }
        let result = try Subprocess.run(prlimit, ["--pid", "\(pid)", "--nofile=\(soft):"], timeout: 10)
        guard result.exitCode == 0 else {
            throw SubprocessError("prlimit --pid \(pid) --nofile=\(soft): failed: \(result.stderr)\(result.stdout)")
        }
    }
}
