import NIOCore
import SecProxyTLS

/// Dialling and wiring the backend; deadlines; the end of the connection.
extension Connection {
    func connect() {
        let pool = runtime.pool(forServerName: tlsInfo?.serverName)
        self.pool = pool
        connector.start(pool: pool) { outcome in
            self.connectEnded(outcome)
        }
    }

    func connectEnded(_ outcome: BackendConnectOutcome) {
        switch outcome {
        case .connected(let channel, let target, let index):
            do {
                try channel.pipeline.syncOperations.addHandler(GlueHandler(side: .backend, connection: self))
            } catch {
                channel.close(promise: nil)
                perform(machine.backendFailed(.backendUnavailable, detail: ErrorText.of(error)))
                return
            }
            wired = (target, index)
            pool?.balancer.opened(index)
            pool?.health?.record(index: index, success: true)
            perform(machine.backendConnected(now: eventLoop.now))
        case .failed(let reason, let detail):
            perform(machine.backendFailed(reason, detail: detail))
        case .cancelled:
            perform(machine.backendFailed(.error, detail: nil))
        }
        syncTimer()
    }

    func wireBackend(_ wire: ConnectionStateMachine.WireBackend) {
        if let header = proxyProtocolHeader() {
            backend?.write(NIOAny(header), promise: nil)
        }
        for buffer in wire.held {
            stage(buffer, for: .backend)
        }
        if wire.heldBytes > 0 {
            flush(.backend, bytes: wire.heldBytes)
        } else {
            backend?.flush()
        }
        if wire.closeOutput { closeOutput(.backend) }
        if wire.readClient { client?.read() }
    }

    /// The PROXY header for the backend (`proxy_protocol`), or nil when off.
    func proxyProtocolHeader() -> ByteBuffer? {
        let addresses: ProxyProtocolHeader.Addresses
        if let source = clientAddress, let destination = localAddress, source.ipAddress != nil,
            destination.ipAddress != nil
        {
            addresses = .inet(source: source, destination: destination)
        } else {
            addresses = .unknown
        }
        var header = ProxyProtocolHeader(addresses: addresses)
        switch runtime.proxyProtocol {
        case .off:
            return nil
        case .v1:
            return header.encodeV1()
        case .v2:
            if let tlsInfo {
                header.alpn = tlsInfo.alpn
                header.authority = tlsInfo.serverName
                header.tls = ProxyProtocolHeader.TLS(
                    version: tlsInfo.version, cipher: tlsInfo.cipher,
                    clientCommonName: tlsInfo.peerCertificate?.commonName,
                    clientCertificateVerified: tlsInfo.peerCertificate != nil
                )
            }
            return header.encodeV2()
        }
    }

    // MARK: - Deadlines and the end

    /// Keeps one timer armed for the state machine's next deadline. Deadlines that move later (activity)
    /// leave the timer as it is: it fires early and is re-armed.
    func syncTimer() {
        guard let deadline = machine.deadline else {
            timer?.cancel()
            timer = nil
            timerDeadline = nil
            return
        }
        if let scheduled = timerDeadline, scheduled <= deadline { return }
        timer?.cancel()
        timerDeadline = deadline
        timer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timer = nil
            self.timerDeadline = nil
            self.perform(self.machine.timerFired(now: self.eventLoop.now))
            self.syncTimer()
        }
    }

    func endHandshake() {
        guard inHandshake else { return }
        inHandshake = false
        tracker.handshakeEnded()
    }

    func finish() {
        timer?.cancel()
        timer = nil
        timerDeadline = nil
        endHandshake()
        ticket?.release()
        ticket = nil
        if let wired { pool?.balancer.closed(wired.index) }
        let duration = eventLoop.now - acceptedAt
        runtime.metrics.connectionClosed(reason: machine.reason ?? .error)
        observer.connectionClosed(
            ConnectionSummary(
                listener: runtime.name,
                clientAddress: clientAddress,
                backend: wired?.target.text ?? "",
                sni: tlsInfo?.serverName,
                alpn: tlsInfo?.alpn,
                tlsVersion: tlsInfo?.version,
                cipher: tlsInfo?.cipher,
                resumed: tlsInfo?.resumed,
                bytesIn: machine.bytesIn,
                bytesOut: machine.bytesOut,
                durationMilliseconds: duration.nanoseconds / 1_000_000,
                reason: machine.reason ?? .error,
                detail: machine.detail
            )
        )
        // Break the cycles through the handler contexts.
        client = nil
        backend = nil
        heldForClient = nil
        heldForBackend = nil
    }
}
