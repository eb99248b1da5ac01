import COpenSSL
import CSecProxyOpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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
    let ticketKeyStore: TLSTicketKeyStore?
    /// The session ID context of every `SSL_CTX` of the listener (`TLSSessionIDContext`).
    let sessionIDContext: TLSSessionIDContext
    /// `client_auth = "require"`: a resumed session must carry a client certificate.
    private let requiresClientCertificate: Bool

    /// Reads every file `configuration` names (each once) and builds every `SSL_CTX` of a listener from them.
    ///
    /// - Parameters:
    ///   - previous: the context this one replaces on a reload, if any (see `init(configuration:files:previous:)`).
    /// - Throws: `TLSError` whose reason says what failed (a file, the key match, a cipher string, ...).
    public convenience init(configuration: TLSServerConfiguration, previous: TLSServerContext? = nil) throws {
        try self.init(configuration: configuration, previous: previous, sessionIDContext: nil)
    }

    /// Builds every `SSL_CTX` of a listener from files already parsed; opens no file.
    ///
    /// - Parameters:
    ///   - files: the parsed contents of the files `configuration` names (`TLSServerFiles(loading:from:)`).
    ///   - previous: the context this one replaces on a reload, if any. When both use random ticket
    ///     keys (tickets on, no `ticketKeys`), the new context keeps the old one's keys and rotation
    ///     schedule, so a reload does not throw every ticket away. Whether a kept ticket still resumes
    ///     is the session ID context's decision: a reload that changed who may connect refuses it.
    /// - Throws: `TLSError` whose reason says what failed (the key match, a cipher string, a revoked
    ///   certificate, ...).
    public convenience init(
        configuration: TLSServerConfiguration,
        files: TLSServerFiles,
        previous: TLSServerContext? = nil
    ) throws {
        try self.init(configuration: configuration, files: files, previous: previous, sessionIDContext: nil)
    }

    /// Reads the files of `configuration` (each once), then as `init(configuration:files:previous:...)`.
    convenience init(
        configuration: TLSServerConfiguration,
        previous: TLSServerContext?,
        sessionIDContext: TLSSessionIDContext?,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        var files = TLSFileSet(secretPaths: configuration.secretPaths)
        try self.init(
            configuration: configuration,
            files: TLSServerFiles(loading: configuration, from: &files),
            previous: previous,
            sessionIDContext: sessionIDContext,
            clock: clock
        )
    }

    /// - Parameters:
    ///   - sessionIDContext: replaces the digest of the configuration (tests only: two contexts with
    ///     different client authentication that still accept each other's sessions, to test what
    ///     happens behind the session ID context).
    ///   - clock: the time OCSP responses are judged by, at load and at every handshake.
    init(
        configuration: TLSServerConfiguration,
        files: TLSServerFiles,
        previous: TLSServerContext?,
        sessionIDContext: TLSSessionIDContext?,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        self.configuration = configuration
        for proto in configuration.alpn where proto.utf8.isEmpty || proto.utf8.count > 255 {
            throw TLSError.own("ALPN protocol must be 1 to 255 bytes", detail: proto)
        }
        self.alpnProtocols = configuration.alpn.map { Array($0.utf8) }

        // Everything that decides who may connect was read once (`files`): what the session ID context
        // digests is exactly what the contexts verify against.
        let clientAuthentication = files.clientCA.map { authorities in
            ClientAuthentication(
                authorities: authorities,
                crls: files.clientCRL,
                required: !configuration.clientCertificateOptional
            )
        }
        self.requiresClientCertificate = clientAuthentication?.required ?? false
        let defaultChain = files.certificate.chain
        self.sessionIDContext =
            try sessionIDContext
            ?? TLSSessionIDContext(
                TLSSessionIDContext.Inputs(
                    listenerName: configuration.listenerName,
                    defaultCertificateDER: defaultChain[0].derBytes(),
                    clientCA: clientAuthentication?.authorities.bytes,
                    clientCRL: clientAuthentication?.crls?.bytes,
                    clientAuthentication: clientAuthentication.map { $0.required ? .require : .optional } ?? .none,
                    allowedClients: configuration.allowedClients
                )
            )

        let sessionIDContext = self.sessionIDContext
        let defaultContext = try Self.makeContext(
            identity: files.certificate,
            configuration: configuration,
            sessionIDContext: sessionIDContext,
            clientAuthentication: clientAuthentication,
            clock: clock
        )
        let sniChains = files.sniCertificates.map(\.chain)
        let sniContexts = try files.sniCertificates.map { identity in
            try Self.makeContext(
                identity: identity,
                configuration: configuration,
                sessionIDContext: sessionIDContext,
                clientAuthentication: clientAuthentication,
                clock: clock
            )
        }
        self.certificateChain = defaultChain
        self.sniCertificateChains = sniChains
        self.defaultContext = defaultContext
        self.sniContexts = sniContexts

        if configuration.sessionTickets {
            let store: TLSTicketKeyStore
            if !configuration.ticketKeys.isEmpty {
                store = TLSTicketKeyStore(fixed: configuration.ticketKeys)
            } else if let previous, previous.configuration.sessionTickets, previous.configuration.ticketKeys.isEmpty,
                let kept = previous.ticketKeyStore
            {
                store = kept
            } else {
                store = try TLSTicketKeyStore(rotatingEvery: TLSDefaults.ticketKeyRotationInterval)
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

    /// Who may connect: the client CA and CRL of a listener as parsed once (`TLSServerFiles`), and whether a
    /// certificate is required.
    private struct ClientAuthentication {
        var authorities: TLSCertificateAuthorities
        var crls: TLSRevocationList?
        /// `client_auth = "require"`.
        var required: Bool
    }

    private static func makeContext(
        identity: TLSIdentity,
        configuration: TLSServerConfiguration,
        sessionIDContext: TLSSessionIDContext,
        clientAuthentication: ClientAuthentication?,
        clock: @escaping @Sendable () -> Date
    ) throws -> SSLContextBox {
        let chain = identity.chain
        let box = try SSLContextBox(server: true)
        try box.applyCommonSettings(
            noTickets: !configuration.sessionTickets,
            minimumVersion: configuration.minimumVersion,
            maximumVersion: configuration.maximumVersion,
            cipherList: configuration.cipherList,
            cipherSuites: configuration.cipherSuites,
            groups: configuration.groups
        )
        try box.useCertificate(chain: chain, key: identity.key, origin: identity.keyPath)

        if let response = identity.ocspResponse {
            switch response.verdict(at: clock()) {
            case .staple:
                box.staple(response, clock: clock)
            case .revoked:
                throw TLSError.own(
                    "OCSP response \(response.path): certificate \(chain[0].displayName) is revoked"
                )
            case .unknownStatus, .notYetValid, .expired:
                // Not stapled; `--check-config` and a reload warn about it (TLSSettingsValidation).
                break
            }
        }

        ERR_clear_error()
        _ = csp_ssl_ctx_set_session_cache_mode_server(box.ctx)
        _ = csp_ssl_ctx_sess_set_cache_size(box.ctx, TLSDefaults.sessionCacheSize)
        guard SSL_CTX_set_num_tickets(box.ctx, TLSDefaults.ticketsPerHandshake) == 1 else {
            throw TLSError.drainingErrorQueue(operation: "SSL_CTX_set_num_tickets", fallback: "rejected")
        }
        // Every context of the listener gets the same session ID context. OpenSSL compares it when it
        // resumes (TLS 1.2 session IDs and tickets, TLS 1.3 PSKs), before the SNI callback may switch
        // the connection to another context; `SSL_set_SSL_CTX` then copies the new context's value,
        // the same one, so new sessions carry it too whatever certificate SNI chose.
        try sessionIDContext.install(on: box.ctx)

        if let clientAuthentication {
            let authorities = clientAuthentication.authorities
            do {
                try box.verifyClients(trusting: authorities, required: clientAuthentication.required)
            } catch let error as TLSError {
                throw TLSError(
                    reason: "client CA \(authorities.path): \(error.reason)",
                    description: "loading client CA: \(error.description)"
                )
            }
            if let crls = clientAuthentication.crls {
                do {
                    try box.checkRevocation(crls.crls)
                } catch let error as TLSError {
                    throw TLSError(
                        reason: "client CRL \(crls.path): \(error.reason)",
                        description: "loading client CRL: \(error.description)"
                    )
                }
            }
        }
        return box
    }

    /// Defence in depth behind the session ID context: with `client_auth = "require"`, a resumed
    /// session that carries no client certificate is refused (it cannot come from this listener's
    /// configuration; a session ID context that matched it anyway must not let it through).
    ///
    /// - Returns: the error to fail the handshake with, or nil.
    func resumptionRefusal(_ ssl: OpaquePointer) -> TLSError? {
        guard self.requiresClientCertificate, SSL_session_reused(ssl) == 1,
            SSL_get0_peer_certificate(ssl) == nil
        else { return nil }
        return TLSError(
            reason: "resumed session without client certificate",
            description: "handshake: refused to resume a session that carries no client certificate "
                + "(client_auth = \"require\")"
        )
    }

    /// The names a certificate answers for: its DNS SANs, else its CN.
    private static func certificateNames(_ certificate: TLSCertificate) -> [String] {
        if !certificate.dnsNames.isEmpty { return certificate.dnsNames }
        return certificate.commonName.map { [$0] } ?? []
    }

    // MARK: - Callbacks

    /// Chooses the certificate for the client's SNI (inside `SSL_do_handshake`).
    ///
    /// OpenSSL calls it after it decided on resumption (`SSL_session_reused` and the session's peer
    /// certificate are known) and before the ServerHello, so this is also where a resumed session is
    /// refused without a Finished message ever sent for it (`resumptionRefusal`).
    fileprivate func selectCertificate(ssl: OpaquePointer, alert: UnsafeMutablePointer<Int32>?) -> Int32 {
        if let refusal = self.resumptionRefusal(ssl) {
            TLSConnection.from(ssl: ssl)?.refusal = refusal
            alert?.pointee = csp_ssl_ad_handshake_failure()
            return csp_ssl_tlsext_err_alert_fatal()
        }
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
