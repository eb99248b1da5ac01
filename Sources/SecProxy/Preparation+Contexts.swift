import Foundation
import SecProxyConfig
import SecProxyTLS

/// The TLS contexts of a configuration, built from the files its checks parsed.
extension Preparation {
    /// Every context of a configuration, and the errors of those that could not be built.
    struct Contexts {
        /// By listener name, one per `tls` listener.
        var server: [String: TLSServerContext] = [:]
        /// By listener name, one per listener with `[listener.backend_tls]`.
        var backend: [String: TLSClientContext] = [:]
        /// "cannot set up TLS for listener ...", at the table of the context that failed.
        var diagnostics: [Diagnostic] = []
    }

    /// Builds every TLS context of `configuration` from the parsed contents of `files`, where the checks read
    /// every file the configuration names (the system trust roots, for a `[listener.backend_tls]` without
    /// `ca`, are read here, once).
    /// - Parameters:
    ///   - previous: the configuration in force, on a reload (random ticket keys carry over).
    ///   - path: the configuration's path, as the user gave it.
    static func makeContexts(
        _ configuration: ProxyConfiguration, files: inout TLSFileSet, previous: PreparedConfiguration?, path: String
    ) -> Contexts {
        var contexts = Contexts()
        for listener in configuration.listeners {
            if let backendTLS = listener.backendTLS {
                do {
                    let settings = clientConfiguration(backendTLS)
                    contexts.backend[listener.name] = try TLSClientContext(
                        configuration: settings,
                        files: TLSClientFiles(loading: settings, from: &files)
                    )
                } catch {
                    contexts.diagnostics.append(
                        .error(
                            "cannot set up backend TLS for listener '\(listener.name)': \(reasonText(error))",
                            at: backendTLS.location, file: path
                        )
                    )
                }
            }
            guard listener.mode == .tls, let tls = listener.tls else { continue }
            do {
                let settings = try serverConfiguration(tls, listener: listener.name, files: &files)
                contexts.server[listener.name] = try TLSServerContext(
                    configuration: settings,
                    files: TLSServerFiles(loading: settings, from: &files),
                    previous: previous?.tlsContexts[listener.name]
                )
            } catch {
                contexts.diagnostics.append(
                    .error(
                        "cannot set up TLS for listener '\(listener.name)': \(reasonText(error))",
                        at: tls.location, file: path
                    )
                )
            }
        }
        return contexts
    }

    /// Trust roots for backend TLS when `ca` is not set: the system bundle (Debian's ca-certificates).
    static let systemTrustRoots = "/etc/ssl/certs/ca-certificates.crt"

    /// The TLS layer's settings for a listener's `[listener.backend_tls]`.
    static func clientConfiguration(_ settings: BackendTLSSettings) -> TLSClientConfiguration {
        var configuration = TLSClientConfiguration()
        configuration.trustRootsFile = settings.ca?.path ?? systemTrustRoots
        configuration.verifyHostname = settings.serverName.isEmpty ? nil : settings.serverName
        configuration.certificateChainFile = settings.cert?.path
        configuration.privateKeyFile = settings.key?.path
        configuration.sessionResumption = true
        return configuration
    }

    /// The TLS layer's settings for the `[listener.tls]` of listener `listener`.
    /// - Parameter files: where the ticket key file was read and parsed.
    static func serverConfiguration(
        _ tls: TLSSettings, listener: String, files: inout TLSFileSet
    ) throws -> TLSServerConfiguration {
        var configuration = TLSServerConfiguration(certificateChainFile: tls.cert.path, privateKeyFile: tls.key.path)
        configuration.sniCertificates = tls.sni.map {
            TLSSNICertificate(chainFile: $0.cert.path, keyFile: $0.key.path, names: $0.names)
        }
        configuration.minimumVersion = SecProxyTLS.TLSProtocolVersion(tls.minVersion.value)
        configuration.maximumVersion = SecProxyTLS.TLSProtocolVersion(tls.maxVersion.value)
        configuration.cipherList = tls.ciphers.value
        configuration.cipherSuites = tls.ciphersuites.value
        configuration.groups = tls.curves.value
        configuration.alpn = tls.alpn
        configuration.sessionTickets = tls.sessionTickets
        configuration.clientCAFile = tls.clientCA?.path
        configuration.clientCertificateOptional = tls.clientAuth == .optional
        configuration.clientCRLFile = tls.clientCRL?.path
        // Both are part of the session ID context: sessions never cross listeners, and a change of
        // who may connect refuses the sessions from before it.
        configuration.listenerName = listener
        configuration.allowedClients = tls.allowedClients.map {
            switch $0 {
            case .commonName(let name): return "cn:\(name)"
            case .dnsName(let name): return "dns:\(name.lowercased())"
            case .uri(let uri): return "uri:\(uri)"
            }
        }
        configuration.strictSNI = tls.strictSNI
        configuration.ticketKeys = try tls.ticketKeyFile.map { try files.ticketKeys($0.path).get() } ?? []
        configuration.ocspResponseFile = tls.ocspResponse?.path
        return configuration
    }
}

extension SecProxyTLS.TLSProtocolVersion {
    init(_ version: SecProxyConfig.TLSProtocolVersion) {
        switch version {
        case .tls12: self = .tls12
        case .tls13: self = .tls13
        }
    }
}
