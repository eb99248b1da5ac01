#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The files of one configuration, each opened and read once, and parsed once for each use it is named for.
///
/// `--check-config`, startup and reload make one per preparation: the checks compute their diagnostics from
/// what it parsed, and the TLS contexts are built from the very same objects (`TLSServerFiles`,
/// `TLSClientFiles`). So no file is read twice, and a file replaced while a preparation runs cannot make what
/// was checked differ from what is served or trusted. A path named twice (one CA for two listeners, one key
/// for two certificates) is read once too.
///
/// Every file is opened non-blocking and must be a regular file (`FileBytes.withRegularFile`). Files named as
/// secrets (private keys, ticket keys) are read straight into `TLSSecretBytes`, wiped when the set is released.
/// Errors are worded as the loaders that read by path word them ("cannot read file: ...", "empty file", ...).
public struct TLSFileSet {
    /// One open of a file: its `fstat`, and its bytes or why they could not be read.
    private struct Read {
        var info: stat
        var contents: Result<TLSFileContents, TLSError>
    }

    /// An OCSP response is checked against the certificate it is for.
    private struct OCSPUse: Hashable {
        var path: String
        var certificate: ObjectIdentifier?
    }

    /// Paths read into secret storage even when first opened for another use (a PEM file holding both the
    /// certificate and its key).
    private let secretPaths: Set<String>
    private var reads: [String: Result<Read, FileBytes.Failure>] = [:]
    private var chains: [String: Result<[TLSCertificate], TLSError>] = [:]
    private var keys: [String: Result<TLSPrivateKey, TLSError>] = [:]
    private var ticketKeyLists: [String: Result<[TLSTicketKey], TLSError>] = [:]
    private var authorities: [String: Result<TLSCertificateAuthorities, TLSError>] = [:]
    private var revocationLists: [String: Result<TLSRevocationList, TLSError>] = [:]
    private var ocspResponses: [OCSPUse: Result<TLSOCSPResponse, TLSError>] = [:]

    /// - Parameter secretPaths: every path the configuration names as a private key or a ticket key file.
    public init(secretPaths: some Sequence<String> = [String]()) {
        self.secretPaths = Set(secretPaths)
    }

    /// Opens and reads `path` unless that happened already, and returns the `fstat` of the descriptor it was
    /// read from (so owner and mode checks look at the very file that is parsed), or why it cannot be opened.
    /// A file that opened but could not be read (too large, a read error) fails when it is parsed.
    /// - Parameter secret: the file holds a secret: read it into wiped-on-free storage.
    public mutating func open(_ path: String, secret: Bool = false) -> Result<stat, FileBytes.Failure> {
        self.read(path, secret: secret).map(\.info)
    }

    /// The certificates of the PEM file at `path`, leaf first (`TLSCertificate.loadChain(file:)`).
    public mutating func certificateChain(_ path: String) -> Result<[TLSCertificate], TLSError> {
        if let parsed = self.chains[path] { return parsed }
        let parsed = self.contents(path, secret: false).flatMap { contents in
            parse { try TLSCertificate.loadChain(pem: contents, origin: path) }
        }
        self.chains[path] = parsed
        return parsed
    }

    /// The PEM private key at `path` (`TLSPrivateKey.load(file:)`).
    public mutating func privateKey(_ path: String) -> Result<TLSPrivateKey, TLSError> {
        if let parsed = self.keys[path] { return parsed }
        let parsed = self.contents(path, secret: true).flatMap { contents in
            parse { try TLSPrivateKey.load(pem: contents, origin: path) }
        }
        self.keys[path] = parsed
        return parsed
    }

    /// The session ticket keys of the key file at `path` (`TLSTicketKey.load(file:)`); errors start with
    /// "ticket key file PATH: ".
    public mutating func ticketKeys(_ path: String) -> Result<[TLSTicketKey], TLSError> {
        if let parsed = self.ticketKeyLists[path] { return parsed }
        let parsed = self.contents(path, secret: true).flatMap { contents in
            parse { try TLSTicketKey.parse(contents.secretBytes) }
        }.mapError { TLSError(reason: "ticket key file \(path): \($0.reason)") }
        self.ticketKeyLists[path] = parsed
        return parsed
    }

    /// The CA bundle at `path`: at least one certificate, all of which parse.
    public mutating func certificateAuthorities(_ path: String) -> Result<TLSCertificateAuthorities, TLSError> {
        if let parsed = self.authorities[path] { return parsed }
        let parsed = self.contents(path, secret: false).flatMap { contents in
            parse {
                TLSCertificateAuthorities(
                    path: path,
                    bytes: contents.plainBytes,
                    certificates: try TLSCertificate.loadChain(pem: contents, origin: path),
                    crls: parse { try TLSCRLFile.load(pem: contents, origin: path, requireOne: false) }
                )
            }
        }
        self.authorities[path] = parsed
        return parsed
    }

    /// The CRL file at `path`: at least one CRL, all of which parse.
    public mutating func revocationList(_ path: String) -> Result<TLSRevocationList, TLSError> {
        if let parsed = self.revocationLists[path] { return parsed }
        let parsed = self.contents(path, secret: false).flatMap { contents in
            parse {
                TLSRevocationList(
                    path: path,
                    bytes: contents.plainBytes,
                    crls: try TLSCRLFile.load(pem: contents, origin: path)
                )
            }
        }
        self.revocationLists[path] = parsed
        return parsed
    }

    /// The DER OCSP response at `path`, checked against the leaf of `chain` (its issuer is `chain[1]` when
    /// the chain has one); without a chain, only its structure is checked (`TLSOCSPResponse.load(der:origin:certificate:issuer:)`).
    public mutating func ocspResponse(
        _ path: String,
        for chain: [TLSCertificate]?
    ) -> Result<TLSOCSPResponse, TLSError> {
        let use = OCSPUse(path: path, certificate: chain?.first.map(ObjectIdentifier.init))
        if let parsed = self.ocspResponses[use] { return parsed }
        let parsed = self.contents(path, secret: false).flatMap { contents in
            parse {
                try TLSOCSPResponse.load(
                    der: contents.plainBytes,
                    origin: path,
                    certificate: chain?.first,
                    issuer: chain.flatMap { $0.count > 1 ? $0[1] : nil }
                )
            }
        }
        self.ocspResponses[use] = parsed
        return parsed
    }

    // MARK: - Reading

    private mutating func read(_ path: String, secret: Bool) -> Result<Read, FileBytes.Failure> {
        if let done = self.reads[path] { return done }
        let asSecret = secret || self.secretPaths.contains(path)
        let done = FileBytes.withRegularFile(path) { fd, info -> Result<Read, FileBytes.Failure> in
            let contents: Result<TLSFileContents, TLSError> =
                asSecret
                ? parse { .secret(try TLSSecretBytes.read(fd, info, origin: path)) }
                : FileBytes.readAll(fd, info).map { .plain($0) }.mapError { FileBytes.readError($0, origin: path) }
            return .success(Read(info: info, contents: contents))
        }
        self.reads[path] = done
        return done
    }

    /// The bytes of `path` for a parser, or why there are none in the words of the loader that reads by path.
    private mutating func contents(_ path: String, secret: Bool) -> Result<TLSFileContents, TLSError> {
        switch self.read(path, secret: secret) {
        case .success(let read):
            return read.contents
        case .failure(let failure):
            return .failure(
                secret ? TLSSecretBytes.openError(failure, origin: path) : FileBytes.readError(failure, origin: path)
            )
        }
    }
}

/// `body`'s value, or its error as a `TLSError` (the parsers throw nothing else).
private func parse<T>(_ body: () throws -> T) -> Result<T, TLSError> {
    do {
        return .success(try body())
    } catch let error as TLSError {
        return .failure(error)
    } catch {
        return .failure(TLSError(reason: "\(error)"))
    }
}
