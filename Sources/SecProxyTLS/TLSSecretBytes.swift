import COpenSSL
import CSecProxyOpenSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Bytes that must not outlive their use: the PEM text of a private key, ticket key files, ticket
/// keys. One allocation that Swift never copies behind our back (unlike a copy-on-write `[UInt8]`
/// or `Data`, whose growth leaves stale copies in freed memory), wiped with `OPENSSL_cleanse` when
/// freed.
final class TLSSecretBytes: @unchecked Sendable {
    private let storage: UnsafeMutableRawBufferPointer
    /// Bytes in use, from the start of the storage.
    private(set) var count: Int

    /// `capacity` zeroed bytes, none in use yet.
    init(capacity: Int) {
        self.storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 1), alignment: 16)
        self.storage.initializeMemory(as: UInt8.self, repeating: 0)
        self.count = 0
    }

    /// A copy of `bytes` (the caller's own copy is the caller's to wipe).
    convenience init<C: Collection>(copying bytes: C) where C.Element == UInt8 {
        self.init(capacity: bytes.count)
        UnsafeMutableRawBufferPointer(rebasing: self.storage[0..<bytes.count]).copyBytes(from: bytes)
        self.count = bytes.count
    }

    deinit {
        OPENSSL_cleanse(self.storage.baseAddress, self.storage.count)
        self.storage.deallocate()
    }

    var capacity: Int { self.storage.count }

    /// The bytes in use.
    func withUnsafeBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try body(UnsafeRawBufferPointer(rebasing: self.storage[0..<self.count]))
    }

    /// Appends `bytes`; false (nothing appended) when they do not fit.
    func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= self.capacity - self.count else { return false }
        if let base = bytes.baseAddress, !bytes.isEmpty {
            (self.storage.baseAddress! + self.count).copyMemory(from: base, byteCount: bytes.count)
        }
        self.count += bytes.count
        return true
    }

    /// Forgets the bytes in use (and wipes them), keeping the storage.
    func removeAll() {
        OPENSSL_cleanse(self.storage.baseAddress, self.storage.count)
        self.count = 0
    }

    /// The whole storage, for writing into (then `use(_:)` says how many are in use).
    func withUnsafeMutableStorage<T>(_ body: (UnsafeMutableRawBufferPointer) throws -> T) rethrows -> T {
        try body(self.storage)
    }

    /// Marks the first `count` bytes of the storage as in use.
    func use(_ count: Int) {
        precondition(count >= 0 && count <= self.capacity)
        self.count = count
    }

    /// Whether the bytes in use contain `needle` (PEM markers).
    func contains(_ needle: String) -> Bool {
        let pattern = Array(needle.utf8)
        return self.withUnsafeBytes { bytes in
            guard !pattern.isEmpty, bytes.count >= pattern.count else { return pattern.isEmpty }
            for start in 0...(bytes.count - pattern.count) where bytes[start] == pattern[0] {
                var index = 1
                while index < pattern.count, bytes[start + index] == pattern[index] { index += 1 }
                if index == pattern.count { return true }
            }
            return false
        }
    }

    /// Reads a whole secret file (a private key, ticket keys) straight into wiped-on-free storage.
    ///
    /// The file is opened non-blocking and must be a regular file (`FileBytes.withRegularFile`), so a FIFO
    /// or a device named by the configuration cannot hang the read.
    ///
    /// - Throws: `TLSError` when the file cannot be opened or read, is not a regular file, or is
    ///   larger than `FileBytes.maximumSize`.
    static func load(file path: String) throws -> TLSSecretBytes {
        let opened = FileBytes.withRegularFile(path) { fd, info -> Result<Result<TLSSecretBytes, any Error>, FileBytes.Failure> in
            .success(Result { try self.read(fd, info, origin: path) })
        }
        switch opened {
        case .success(let contents):
            return try contents.get()
        case .failure(let failure):
            throw self.openError(failure, origin: path)
        }
    }

    /// Why a secret file could not be opened, worded as a read failure ("cannot read file: ...").
    static func openError(_ failure: FileBytes.Failure, origin path: String) -> TLSError {
        switch failure {
        case .system(let code):
            return TLSError.own("cannot read file: \(String(cString: strerror(code)))", detail: path)
        case .notRegular:
            return TLSError.own("cannot read file: not a regular file", detail: path)
        case .tooLarge:
            return TLSError.own("file too large", detail: path)
        }
    }

    /// The rest of the open regular file `fd` (whose `fstat` is `info`).
    ///
    /// - Throws: `TLSError` when a read fails or the file is larger than `FileBytes.maximumSize`.
    static func read(_ fd: Int32, _ info: stat, origin path: String) throws -> TLSSecretBytes {
        guard Int(info.st_size) <= FileBytes.maximumSize else {
            throw TLSError.own("file too large", detail: path)
        }
        // One byte more than the size, to see the end of file in the same buffer; a file that grew
        // since fstat gets a larger buffer (the smaller one is wiped when released).
        var secret = TLSSecretBytes(capacity: Int(info.st_size) + 1)
        while true {
            if secret.count == secret.capacity {
                guard secret.capacity <= FileBytes.maximumSize else {
                    throw TLSError.own("file too large", detail: path)
                }
                let larger = TLSSecretBytes(capacity: secret.capacity * 2)
                _ = secret.withUnsafeBytes { larger.append($0) }
                secret = larger
            }
            let free = secret.capacity - secret.count
            let got = secret.withUnsafeMutableStorage { storage in
                readDescriptor(fd, storage.baseAddress! + secret.count, free)
            }
            if got < 0 {
                if errno == EINTR { continue }
                throw TLSError.own("cannot read file: \(String(cString: strerror(errno)))", detail: path)
            }
            if got == 0 { break }
            secret.use(secret.count + got)
        }
        return secret
    }
}

/// `read(2)` under a file-level name, which the static `read` of `TLSSecretBytes` would otherwise hide.
private func readDescriptor(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int { read(fd, buffer, count) }
