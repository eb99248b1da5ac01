import NIOCore
import NIOEmbedded
import SecProxyTLS

/// What the benchmarks (and the profiling driver) do once per operation, each checking that it did what
/// it is meant to measure, so that a benchmark that stopped exercising its path fails instead of
/// getting fast.
package enum Scenarios {
    /// 16 KiB, one full TLS record of plaintext, and the 64 B of a small request or response.
    package static let chunk16K = ByteBuffer(repeating: 0x61, count: 16 * 1024)
    package static let small64 = ByteBuffer(repeating: 0x62, count: 64)

    // MARK: - TLS

    /// One handshake between a new client and server `TLSHandler` pair, tickets included, then
    /// close_notify both ways.
    package static func handshake(
        loop: EmbeddedEventLoop, client: TLSClientContext, resumed: Bool, version: String
    ) throws {
        let pair = try TLSPair(loop: loop, server: TLSMaterial.shared.server, client: client)
        try pair.connect()
        guard pair.clientEnd.handshakes == 1, pair.serverEnd.handshakes == 1,
            pair.serverEnd.resumed == (resumed ? 1 : 0), pair.serverEnd.version == version
        else {
            throw BenchmarkSetupError(
                "handshakes \(pair.clientEnd.handshakes)/\(pair.serverEnd.handshakes), "
                    + "resumed \(pair.serverEnd.resumed), \(pair.serverEnd.version)"
            )
        }
        pair.close()
        loop.run()
    }

    /// A loop on which `client` has had one handshake, so that a resuming client has a session to offer.
    package static func loopWithSession(for client: TLSClientContext) throws -> EmbeddedEventLoop {
        let loop = EmbeddedEventLoop()
        let pair = try TLSPair(loop: loop, server: TLSMaterial.shared.server, client: client)
        try pair.connect()
        pair.close()
        loop.run()
        return loop
    }

    /// The first flight of a TLS 1.3 client (its ClientHello), to replay against new servers.
    package static func recordedClientHello(loop: EmbeddedEventLoop) throws -> ByteBuffer {
        let client = EmbeddedChannel(loop: loop)
        let socket = BenchSocket(keepsWrites: true)
        try client.pipeline.syncOperations.addHandlers([
            socket, TLSHandler(context: TLSMaterial.shared.fullClient13, serverName: "localhost"),
        ])
        try client.connect(to: TLSPair.address).wait()
        guard let hello = socket.outbox.popFirst(), socket.outbox.isEmpty else {
            throw BenchmarkSetupError("no single ClientHello")
        }
        return hello
    }

    /// A new server `TLSHandler` answers `clientHello` with its flight (ServerHello … Finished).
    package static func serverFlight(loop: EmbeddedEventLoop, clientHello: ByteBuffer) throws {
        let channel = EmbeddedChannel(loop: loop)
        let socket = BenchSocket(keepsWrites: false)
        try channel.pipeline.syncOperations.addHandlers([
            socket, TLSHandler(context: TLSMaterial.shared.server), TLSEndpoint(),
        ])
        try channel.connect(to: TLSPair.address).wait()
        socket.inbox.append(clientHello)
        socket.deliver()
        guard socket.bytesWritten > 500 else {
            throw BenchmarkSetupError("server flight: \(socket.bytesWritten) bytes")
        }
        channel.close(promise: nil)
        loop.run()
    }

    /// One established TLS 1.3 pair, with the cipher suite secproxy's defaults negotiate.
    package static func establishedPair() throws -> TLSPair {
        let pair = try TLSPair(
            loop: EmbeddedEventLoop(), server: TLSMaterial.shared.server, client: TLSMaterial.shared.fullClient13
        )
        try pair.connect()
        guard pair.serverEnd.handshakes == 1 else { throw BenchmarkSetupError("no handshake") }
        return pair
    }

    /// The server encrypts `count` records of 16 KiB.
    package static func encrypt(_ pair: TLSPair, count: Int) throws {
        let before = pair.serverSocket.bytesWritten
        for _ in 0..<count {
            pair.serverEnd.send(chunk16K)
        }
        let written = pair.serverSocket.bytesWritten - before
        guard written >= count * (16 * 1024 + 17) else {
            throw BenchmarkSetupError("encrypted \(written) bytes")
        }
    }

    /// The client encrypts `count` records of 16 KiB, kept in its socket's outbox for `decrypt`.
    package static func prepareRecords(_ pair: TLSPair, count: Int) throws {
        for _ in 0..<count {
            pair.clientEnd.send(chunk16K)
        }
        guard pair.clientSocket.outbox.count == count else {
            throw BenchmarkSetupError("\(pair.clientSocket.outbox.count) records for \(count)")
        }
    }

    /// The server decrypts the records `prepareRecords` made.
    package static func decrypt(_ pair: TLSPair) throws {
        let count = pair.clientSocket.outbox.count
        let before = pair.serverEnd.bytesReceived
        while let record = pair.clientSocket.outbox.popFirst() {
            pair.serverSocket.inbox.append(record)
            pair.serverSocket.deliver()
        }
        let received = pair.serverEnd.bytesReceived - before
        guard received == count * 16 * 1024 else {
            throw BenchmarkSetupError("decrypted \(received) bytes")
        }
    }

    // MARK: - The data path

    /// A plain listener's world and one connection through it, both sides being read.
    package static func plainPair() throws -> PlainPair {
        let world = try DataPathWorld()
        let pair = try GluePair(world: world, keepsWrites: false)
        guard pair.backendSocket.readPending, pair.clientSocket.readPending else {
            throw BenchmarkSetupError("the connection did not start reading both sides")
        }
        return (world, pair)
    }

    /// `count` chunks of 16 KiB from the client to the backend.
    package static func forwardToBackend(_ pair: GluePair, count: Int) throws {
        let before = pair.backendSocket.bytesWritten
        for _ in 0..<count {
            pair.clientSends(chunk16K)
        }
        let forwarded = pair.backendSocket.bytesWritten - before
        guard forwarded == count * 16 * 1024 else { throw BenchmarkSetupError("forwarded \(forwarded) bytes") }
    }

    /// `count` chunks of 16 KiB from the backend to the client.
    package static func forwardToClient(_ pair: GluePair, count: Int) throws {
        let before = pair.clientSocket.bytesWritten
        for _ in 0..<count {
            pair.backendSends(chunk16K)
        }
        let forwarded = pair.clientSocket.bytesWritten - before
        guard forwarded == count * 16 * 1024 else { throw BenchmarkSetupError("forwarded \(forwarded) bytes") }
    }

    /// `count` requests of 64 B, each answered by 64 B.
    package static func requestResponse(_ pair: GluePair, count: Int) throws {
        let before = (pair.backendSocket.bytesWritten, pair.clientSocket.bytesWritten)
        for _ in 0..<count {
            pair.clientSends(small64)
            pair.backendSends(small64)
        }
        guard pair.backendSocket.bytesWritten - before.0 == count * 64,
            pair.clientSocket.bytesWritten - before.1 == count * 64
        else {
            throw BenchmarkSetupError("request/response bytes do not add up")
        }
    }

    /// `count` plain connections: accepted, wired to their backend, 64 B each way, closed by the client's
    /// FIN and then the backend's.
    package static func plainConnections(_ world: DataPathWorld, count: Int) throws {
        let closedBefore = world.observer.closed
        for _ in 0..<count {
            let pair = try GluePair(world: world, keepsWrites: false)
            pair.clientSends(small64)
            pair.backendSends(small64)
            pair.closeGracefully(world)
        }
        guard world.observer.closed - closedBefore == count, world.observer.lastReason == .clientClosed,
            world.tracker.count == 0
        else {
            throw BenchmarkSetupError(
                "closed \(world.observer.closed - closedBefore), \(String(describing: world.observer.lastReason)), "
                    + "open \(world.tracker.count)"
            )
        }
    }

    /// `count` TLS connections: a TLS client against the proxy's whole pipeline (admission, TLS
    /// handler, connection, glue, backend wiring): full handshake, 64 B each way, close.
    package static func tlsConnections(_ world: DataPathWorld, client: TLSClientContext, count: Int) throws {
        let closedBefore = world.observer.closed
        for _ in 0..<count {
            let pair = try GluePair(world: world, keepsWrites: true, activate: false)
            let tlsClient = EmbeddedChannel(loop: world.loop)
            let socket = BenchSocket(keepsWrites: true)
            let end = TLSEndpoint()
            try tlsClient.pipeline.syncOperations.addHandlers([
                socket, TLSHandler(context: client, serverName: "localhost"), end,
            ])
            try pair.activate(world)
            try tlsClient.connect(to: GluePair.listenAddress).wait()
            socket.shuttle(with: pair.clientSocket)
            end.send(small64)
            socket.shuttle(with: pair.clientSocket)
            pair.backendSends(small64)
            socket.shuttle(with: pair.clientSocket)
            guard end.bytesReceived == 64, pair.backendSocket.bytesWritten == 64 else {
                throw BenchmarkSetupError("client got \(end.bytesReceived), backend \(pair.backendSocket.bytesWritten)")
            }
            tlsClient.close(promise: nil)
            socket.shuttle(with: pair.clientSocket)
            pair.backendSocket.peerSendsFIN()
            world.loop.run()
            socket.shuttle(with: pair.clientSocket)
            world.loop.run()
        }
        guard world.observer.closed - closedBefore == count, world.tracker.count == 0 else {
            throw BenchmarkSetupError(
                "closed \(world.observer.closed - closedBefore), open \(world.tracker.count), "
                    + "\(String(describing: world.observer.lastReason))"
            )
        }
    }

    /// Two `EmbeddedChannel`s with a `BenchSocket` each, activated and closed: the harness's own cost in
    /// the benchmarks that build channels per operation.
    package static func channelPair(loop: EmbeddedEventLoop) throws {
        let a = EmbeddedChannel(loop: loop)
        let b = EmbeddedChannel(loop: loop)
        try a.pipeline.syncOperations.addHandler(BenchSocket(keepsWrites: true))
        try b.pipeline.syncOperations.addHandler(BenchSocket(keepsWrites: true))
        try a.connect(to: TLSPair.address).wait()
        try b.connect(to: TLSPair.address).wait()
        a.close(promise: nil)
        b.close(promise: nil)
        loop.run()
    }
}

/// A plain listener's world and one connection through it.
package typealias PlainPair = (world: DataPathWorld, pair: GluePair)
