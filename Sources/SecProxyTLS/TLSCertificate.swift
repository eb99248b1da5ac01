import COpenSSL
import CSecProxyOpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An X.509 certificate; owns its `X509`. Immutable: every field is read once, at load.
public final class TLSCertificate: @unchecked Sendable {
    /// The owned `X509` (one reference).
    let x509: OpaquePointer

    /// Subject common name, if any.
    public let commonName: String?
    /// DNS subject alternative names, as written in the certificate.
    public let dnsNames: [String]
    /// URI subject alternative names.
    public let uris: [String]
    /// Start of validity.
    public let notBefore: Date
    /// End of validity.
    public let notAfter: Date

    /// First DNS SAN, else the CN, else "" (the `name` label of the expiry metric).
    public var displayName: String {
        self.dnsNames.first ?? self.commonName ?? ""
    }

    /// End of validity as Unix time.
    public var notAfterUnixTime: Int64 {
        Int64(self.notAfter.timeIntervalSince1970)
    }

    /// Takes ownership of one reference of `x509`.
    init(taking x509: OpaquePointer) {
        self.x509 = x509
        self.commonName = Self.readCommonName(x509)
        let names = Self.readSubjectAltNames(x509)
        self.dnsNames = names.dns
        self.uris = names.uris
        self.notBefore = X509_get0_notBefore(x509).flatMap(Self.date(of:)) ?? Date(timeIntervalSince1970: 0)
        self.notAfter = X509_get0_notAfter(x509).flatMap(Self.date(of:)) ?? Date(timeIntervalSince1970: 0)
    }

    deinit {
        X509_free(self.x509)
    }

    /// Loads every certificate of a PEM file, in file order (leaf first for a chain).
    ///
    /// - Parameter file: path of the PEM file.
    /// - Throws: `TLSError` when the file cannot be read, is empty, is not PEM, holds no certificate,
    ///   or a certificate does not parse.
    public static func loadChain(file: String) throws -> [TLSCertificate] {
        var files = TLSFileSet()
        return try files.certificateChain(file).get()
    }

    /// Parses every certificate of the PEM `bytes` of the file `origin`, in file order.
    static func loadChain(pem bytes: TLSFileContents, origin: String) throws -> [TLSCertificate] {
        guard !bytes.isEmpty else {
            throw TLSError.own("empty file", detail: origin)
        }
        guard bytes.contains("-----BEGIN ") else {
            throw TLSError.own("not PEM", detail: origin)
        }
        return try withMemoryBIO(bytes) { bio in
            var chain: [TLSCertificate] = []
            ERR_clear_error()
            while let x509 = PEM_read_bio_X509(bio, nil, nil, nil) {
                chain.append(TLSCertificate(taking: x509))
            }
            // The loop always ends on an error; "no start line" after at least one certificate is
            // the normal end of the file.
            let code = ERR_peek_last_error()
            if ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE {
                ERR_clear_error()
                guard !chain.isEmpty else {
                    throw TLSError.own("no certificate found", detail: origin)
                }
                return chain
            }
            throw TLSError.drainingErrorQueue(
                operation: "parsing certificate in \(origin)",
                fallback: "certificate does not parse"
            )
        }
    }

    /// The peer-facing summary used in `TLSSessionInfo`.
    var peerInfo: TLSPeerCertificateInfo {
        TLSPeerCertificateInfo(commonName: self.commonName, dnsNames: self.dnsNames, uris: self.uris)
    }

    /// The DER encoding of the certificate.
    ///
    /// - Throws: `TLSError` when OpenSSL cannot encode it.
    func derBytes() throws -> [UInt8] {
        ERR_clear_error()
        let count = i2d_X509(self.x509, nil)
        guard count > 0 else {
            throw TLSError.drainingErrorQueue(operation: "i2d_X509", fallback: "cannot encode certificate")
        }
        var der = [UInt8](repeating: 0, count: Int(count))
        let written = der.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            return i2d_X509(self.x509, &cursor)
        }
        guard written == count else {
            throw TLSError.drainingErrorQueue(operation: "i2d_X509", fallback: "cannot encode certificate")
        }
        return der
    }

    // MARK: - Field extraction

    private static func readCommonName(_ x509: OpaquePointer) -> String? {
        guard let name = X509_get_subject_name(x509) else { return nil }
        // The last CN is the most specific one when a subject carries several.
        var index: Int32 = -1
        var last: Int32 = -1
        while true {
            index = X509_NAME_get_index_by_NID(name, NID_commonName, index)
            if index < 0 { break }
            last = index
        }
        guard last >= 0, let entry = X509_NAME_get_entry(name, last),
            let data = X509_NAME_ENTRY_get_data(entry)
        else { return nil }
        var utf8: UnsafeMutablePointer<UInt8>?
        let length = ASN1_STRING_to_UTF8(&utf8, data)
        guard length >= 0, let utf8 else {
            ERR_clear_error()
            return nil
        }
        defer { csp_openssl_free(utf8) }
        return String(decoding: UnsafeBufferPointer(start: utf8, count: Int(length)), as: UTF8.self)
    }

    private static func readSubjectAltNames(_ x509: OpaquePointer) -> (dns: [String], uris: [String]) {
        guard let raw = X509_get_ext_d2i(x509, NID_subject_alt_name, nil, nil) else {
            ERR_clear_error()
            return ([], [])
        }
        let names = OpaquePointer(raw)
        defer { GENERAL_NAMES_free(names) }
        var dns: [String] = []
        var uris: [String] = []
        let dnsType = csp_gen_dns()
        let uriType = csp_gen_uri()
        for i in 0..<csp_sk_GENERAL_NAME_num(names) {
            guard let name = csp_sk_GENERAL_NAME_value(names, i) else { continue }
            if let value = csp_general_name_ia5(name, dnsType) {
                dns.append(string(of: value))
            } else if let value = csp_general_name_ia5(name, uriType) {
                uris.append(string(of: value))
            }
        }
        return (dns, uris)
    }

    private static func string(of asn1: UnsafePointer<ASN1_STRING>) -> String {
        let length = Int(ASN1_STRING_length(asn1))
        guard length > 0, let data = ASN1_STRING_get0_data(asn1) else { return "" }
        return String(decoding: UnsafeBufferPointer(start: data, count: length), as: UTF8.self)
    }

    /// An ASN.1 time (UTCTime or GeneralizedTime) as a `Date`; nil when OpenSSL cannot read it.
    static func date(of time: UnsafePointer<ASN1_TIME>) -> Date? {
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else {
            ERR_clear_error()
            return nil
        }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }
}

/// Runs `body` with a read-only memory BIO over `raw` (in place), freed afterwards.
func withMemoryBIO<T>(_ raw: UnsafeRawBufferPointer, _ body: (OpaquePointer) throws -> T) throws -> T {
    ERR_clear_error()
    guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else {
        throw TLSError.drainingErrorQueue(operation: "BIO_new_mem_buf", fallback: "out of memory")
    }
    defer { BIO_free(bio) }
    return try body(bio)
}
