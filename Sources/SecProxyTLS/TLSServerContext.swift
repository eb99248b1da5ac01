import COpenSSL
import CSecProxyOpenSSL

/// Everything a TLS listener needs to accept connections: the default `SSL_CTX`, one per SNI
/// certificate, the SNI name table, the ALPN list, the session ticket keys and the OCSP responses.
/// Built once (off the event loops), immutable afterwards (but for random ticket keys, which
/// rotate), shared by every connection of the listener.
public final class TLSServerContext: @unchecked Sendable {
    /// The configuration this context was built from.
    public let configuration: TLSServerConfiguration
    /// The default certificate chain, leaf first.
    public let certificateChain: [TLSCertificate]
    /// The SNI certificate chains, in configuration order.
    public let sniCertificateChains: [[TLSCertificate]]

    /// Leaf certificates: the default one first, then one per SNI entry (for expiry metrics).
    public var certificates: [TLSCertificate] {
        [self.certificateChain[0]] + self.sniCertificateChains.map { $0[0] }
    }

    let defaultContext: SSLContextBox
    let sniContexts: [SSLContextBox]
    private let names: SNINameTable
    /// ALPN protocols in server preference order, as bytes.
    private let alpnProtocols: [[UInt8]]
    /// The session ticket keys of every context; nil when tickets are off.
    private let ticketKeyStore: TLSTicketKeyStore?

    /// Builds every `SSL_CTX` of a listener.
    ///
    /// - Throws: `TLSError` whose reason says what failed (a file, the key match, a cipher string, ...).
    public init(configuration: TLSServerConfiguration) throws {
        self.configuration = configuration
        for proto in configuration.alpn where proto.utf8.isEmpty || proto.utf8.count > 255 {
            throw TLSError.own("ALPN protocol must be 1 to 255 bytes", detail: proto)
        }
        self.alpnProtocols = configuration.alpn.map { Array($0.utf8) }

        let (defaultChain, defaultContext) = try Self.makeContext(
            chainFile: configuration.certificateChainFile,
            keyFile: configuration.privateKeyFile,
            ocspResponseFile: configuration.ocspResponseFile,
            configuration: configuration
        )
        var sniChains: [[TLSCertificate]] = []
        var sniContexts: [SSLContextBox] = []
        for entry in configuration.sniCertificates {
            let (chain, context) = try Self.makeContext(
                chainFile: entry.chainFile,
                keyFile: entry.keyFile,
                ocspResponseFile: entry.ocspResponseFile,
                configuration: configuration
            )
            sniChains.append(chain)
            sniContexts.append(context)
        }
        self.certificateChain = defaultChain
        self.sniCertificateChains = sniChains
        self.defaultContext = defaultContext
        self.sniContexts = sniContexts

        if configuration.sessionTickets {
            let store: TLSTicketKeyStore
            if configuration.ticketKeys.isEmpty {
                store = try TLSTicketKeyStore(rotatingEvery: TLSDefaults.ticketKeyRotationInterval)
            } else {
                store = TLSTicketKeyStore(fixed: configuration.ticketKeys)
            }
            for box in [defaultContext] + sniContexts {
                try box.useTicketKeys(store)
            }
            self.ticketKeyStore = store
        } else {
            self.ticketKeyStore = nil
        }

        var table = SNINameTable()
        for (index, entry) in configuration.sniCertificates.enumerated() {
            for name in entry.names ?? Self.certificateNames(sniChains[index][0]) {
                table.add(name, target: .sni(index))
            }
        }
        for name in Self.certificateNames(defaultChain[0]) {
            table.add(name, target: .defaultCertificate)
        }
        self.names = table

        // Callbacks get this object unretained; every connection retains its context, so it
        // outlives every SSL that can call back.
        let unretainedSelf = Unmanaged.passUnretained(self).toOpaque()
        csp_ssl_ctx_set_servername_callback(self.defaultContext.ctx, serverNameCallback, unretainedSelf)
        if !self.alpnProtocols.isEmpty {
            // The ALPN callback runs on the context SNI switched to, so every context gets it.
            for box in [self.defaultContext] + self.sniContexts {
                SSL_CTX_set_alpn_select_cb(box.ctx, alpnSelectCallback, unretainedSelf)
            }
        }
    }

    /// Random ticket keys (no `ticketKeys` configured): makes a new current key now; the current
    /// one keeps decrypting until the next rotation, so tickets issued before stay valid that long.
    /// Rotation also happens by itself every hour when a ticket is issued or presented; this is for a
    /// daemon that wants it on its own schedule. No effect with configured keys or tickets off.
    /// Thread-safe.
    public func rotateTicketKeys() {
        self.ticketKeyStore?.rotate()
    }

    private static func makeContext(
        chainFile: String,
        keyFile: String,
        ocspResponseFile: String?,
        configuration: TLSServerConfiguration
    ) throws -> ([TLSCertificate], SSLContextBox) {
        let chain: [TLSCertificate]
        do {
            chain = try TLSCertificate.loadChain(file: chainFile)
        } catch let error as TLSError {
            throw TLSError(
                reason: "certificate \(chainFile): \(error.reason)",
                description: "loading certificate chain: \(error.description)"
            )
        }
        let key: TLSPrivateKey
        do {
            key = try TLSPrivateKey.load(file: keyFile)
        } catch let error as TLSError {
            throw TLSError(
                reason: "key \(keyFile): \(error.reason)",
                description: "loading private key: \(error.description)"
            )
        }
        let box = try SSLContextBox(server: true)
        try box.applyCommonSettings(
            noTickets: !configuration.sessionTickets,
            minimumVersion: configuration.minimumVersion,
            maximumVersion: configuration.maximumVersion,
            cipherList: configuration.cipherList,
            cipherSuites: configuration.cipherSuites,
            groups: configuration.groups
        )
        try box.useCertificate(chain: chain, key: key, origin: keyFile)

        if let ocspResponseFile {
            do {
                let issuer = chain.count > 1 ? chain[1] : nil
                box.staple(try TLSOCSPResponse.load(file: ocspResponseFile, certificate: chain[0], issuer: issuer))
            } catch let error as TLSError {
                throw TLSError(
                    reason: "OCSP response \(ocspResponseFile): \(error.reason)",
                    description: "loading OCSP response: \(error.description)"
                )
            }
        }

        ERR_clear_error()
        _ = csp_ssl_ctx_set_session_cache_mode_server(box.ctx)
        _ = csp_ssl_ctx_sess_set_cache_size(box.ctx, TLSDefaults.sessionCacheSize)
        let sidSet = TLSDefaults.sessionIDContext.withUnsafeBufferPointer {
            SSL_CTX_set_session_id_context(box.ctx, $0.baseAddress, UInt32($0.count))
        }
        guard sidSet == 1 else {
            throw TLSError.drainingErrorQueue(operation: "SSL_CTX_set_session_id_context", fallback: "rejected")
        }

        if let caFile = configuration.clientCAFile {
            do {
                try box.verifyPeers(
                    caFile: caFile,
                    required: !configuration.clientCertificateOptional,
                    sendCANames: true
                )
            } catch let error as TLSError {
                throw TLSError(
                    reason: "client CA \(caFile): \(error.reason)",
                    description: "loading client CA: \(error.description)"
                )
            }
            if let crlFile = configuration.clientCRLFile {
                do {
                    try box.checkRevocation(crlFile: crlFile)
                } catch let error as TLSError {
                    throw TLSError(
                        reason: "client CRL \(crlFile): \(error.reason)",
                        description: "loading client CRL: \(error.description)"
                    )
                }
            }
        }
        return (chain, box)
    }

    /// The names a certificate answers for: its DNS SANs, else its CN.
    private static func certificateNames(_ certificate: TLSCertificate) -> [String] {
        if !certificate.dnsNames.isEmpty { return certificate.dnsNames }
        return certificate.commonName.map { [$0] } ?? []
    }

    // MARK: - Callbacks

    /// Chooses the certificate for the client's SNI (inside `SSL_do_handshake`).
    fileprivate func selectCertificate(ssl: OpaquePointer, alert: UnsafeMutablePointer<Int32>?) -> Int32 {
        let serverName = SSL_get_servername(ssl, csp_tlsext_nametype_host_name()).map { String(cString: $0) }
        let target = serverName.flatMap { self.names.lookup($0) }
        switch target {
        case .defaultCertificate:
            return csp_ssl_tlsext_err_ok()
        case .sni(let index):
            ERR_clear_error()
            guard SSL_set_SSL_CTX(ssl, self.sniContexts[index].ctx) != nil else {
                return csp_ssl_tlsext_err_alert_fatal()  // alert defaults to internal_error
            }
            return csp_ssl_tlsext_err_ok()
        case nil:
            guard self.configuration.strictSNI else {
                return csp_ssl_tlsext_err_ok()
            }
            TLSConnection.from(ssl: ssl)?.rejectedServerName = serverName ?? ""
            alert?.pointee = csp_ssl_ad_unrecognized_name()
            return csp_ssl_tlsext_err_alert_fatal()
        }
    }

    /// Picks the first of our protocols the client offers; none → go on without ALPN.
    fileprivate func selectALPN(
        out: UnsafeMutablePointer<UnsafePointer<UInt8>?>,
        outLength: UnsafeMutablePointer<UInt8>,
        offered: UnsafeBufferPointer<UInt8>
    ) -> Int32 {
        for proto in self.alpnProtocols {
            var index = 0
            while index < offered.count {
                let length = Int(offered[index])
                let start = index + 1
                guard start + length <= offered.count else { break }
                if length == proto.count, proto.elementsEqual(offered[start..<(start + length)]) {
                    out.pointee = UnsafePointer(offered.baseAddress! + start)
                    outLength.pointee = UInt8(length)
                    return csp_ssl_tlsext_err_ok()
                }
                index = start + length
            }
        }
        return csp_ssl_tlsext_err_noack()
    }
}

private func serverNameCallback(
    ssl: OpaquePointer?,
    alert: UnsafeMutablePointer<Int32>?,
    arg: UnsafeMutableRawPointer?
)
    -> Int32
{
    guard let ssl, let arg else { return csp_ssl_tlsext_err_ok() }
    return Unmanaged<TLSServerContext>.fromOpaque(arg).takeUnretainedValue().selectCertificate(ssl: ssl, alert: alert)
}

private func alpnSelectCallback(
    ssl: OpaquePointer?,
    out: UnsafeMutablePointer<UnsafePointer<UInt8>?>?,
    outLength: UnsafeMutablePointer<UInt8>?,
    offered: UnsafePointer<UInt8>?,
    offeredLength: UInt32,
    arg: UnsafeMutableRawPointer?
) -> Int32 {
    guard let out, let outLength, let offered, let arg else { return csp_ssl_tlsext_err_noack() }
    return Unmanaged<TLSServerContext>.fromOpaque(arg).takeUnretainedValue().selectALPN(
        out: out,
        outLength: outLength,
        offered: UnsafeBufferPointer(start: offered, count: Int(offeredLength))
    )
}
