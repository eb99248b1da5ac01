import Benchmark
import NIOCore
import NIOEmbedded
import SecProxyBenchKit
import SecProxyTLS

// secproxy's hot paths, in-process, on `EmbeddedChannel`s (no sockets, no syscalls): what each costs in
// time and mallocs per operation. Benchmarks/README.md says what each one measures and how to compare
// before and after a change. The operations themselves are in SecProxyBenchKit's `Scenarios`, shared with
// the profiling driver (SecProxyProfile).
//
// The names are what baselines are matched by: rename one and its history starts over.

/// The metrics every benchmark reports.
///
/// Retains and releases are counted through the Swift runtime's hooks, which crash Swift 6.3 on Linux
/// (ordo-one/benchmark works around that with swift-runtime-interposer, which the package mirrors here do
/// not carry): there they are left out, and counted with callgrind instead (Benchmarks/README.md).
/// `.cpuTotal` is left out too: it ticks in 10 ms steps on Linux, too coarse per operation; these
/// benchmarks run on one thread, so wall-clock time is CPU time while nothing else competes for the core.
#if os(Linux) && compiler(<6.4)
let perOperation: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal]
#else
let perOperation: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal, .retainCount, .releaseCount]
#endif

/// Made on first use, in the benchmark's first (warm-up) run: `EmbeddedEventLoop` must be used on the
/// thread that made it, and the benchmark closures run on one thread while `setup` may run on another.
final class Lazy<Value> {
    private var value: Value?
    private let make: () throws -> Value

    init(_ make: @escaping () throws -> Value) {
        self.make = make
    }

    func get() throws -> Value {
        if let value { return value }
        let made = try make()
        value = made
        return made
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: perOperation,
        timeUnits: .microseconds,
        warmupIterations: 3,
        maxDuration: .seconds(3),
        maxIterations: 100_000
    )
    /// For operations of a few µs or less: 1000 per sample, results per operation.
    let perThousand = Benchmark.Configuration(
        metrics: perOperation, timeUnits: .nanoseconds, warmupIterations: 3, scalingFactor: .kilo,
        maxDuration: .seconds(3), maxIterations: 10_000
    )

    // MARK: - The harness alone (its share of the benchmarks that build channels per operation)

    Benchmark("Harness: EmbeddedChannel pair open, close") {
        (benchmark: Benchmark, world: Lazy<EmbeddedEventLoop>) in
        let loop = try world.get()
        for _ in benchmark.scaledIterations {
            try Scenarios.channelPair(loop: loop)
        }
    } setup: {
        Lazy { EmbeddedEventLoop() }
    }

    // MARK: - TLS handshakes: TLSHandler client and server, both measured

    func handshake(_ name: String, client: @escaping @Sendable () -> TLSClientContext, resumed: Bool, version: String) {
        Benchmark(name) { (benchmark: Benchmark, world: Lazy<EmbeddedEventLoop>) in
            let loop = try world.get()
            let client = client()
            for _ in benchmark.scaledIterations {
                try Scenarios.handshake(loop: loop, client: client, resumed: resumed, version: version)
            }
        } setup: {
            _ = TLSMaterial.shared
            return Lazy { try Scenarios.loopWithSession(for: client()) }
        }
    }
    handshake(
        "TLS 1.3 full handshake, ECDSA P-256, client and server", client: { TLSMaterial.shared.fullClient13 },
        resumed: false, version: "TLSv1.3"
    )
    handshake(
        "TLS 1.3 resumed handshake, ticket, client and server", client: { TLSMaterial.shared.resumingClient13 },
        resumed: true, version: "TLSv1.3"
    )
    handshake(
        "TLS 1.2 full handshake, ECDSA P-256, client and server", client: { TLSMaterial.shared.fullClient12 },
        resumed: false, version: "TLSv1.2"
    )
    handshake(
        "TLS 1.2 resumed handshake, ticket, client and server", client: { TLSMaterial.shared.resumingClient12 },
        resumed: true, version: "TLSv1.2"
    )

    // The server's part of a full TLS 1.3 handshake alone: a recorded ClientHello in, the server's flight
    // (ServerHello … Finished: key share, certificate, signature) out. Without the client's Finished and
    // the tickets that follow it, which cost little next to the signature.
    Benchmark("TLS 1.3 server flight for a recorded ClientHello, server only") {
        (benchmark: Benchmark, world: Lazy<(EmbeddedEventLoop, ByteBuffer)>) in
        let (loop, clientHello) = try world.get()
        for _ in benchmark.scaledIterations {
            try Scenarios.serverFlight(loop: loop, clientHello: clientHello)
        }
    } setup: {
        _ = TLSMaterial.shared
        return Lazy { () -> (EmbeddedEventLoop, ByteBuffer) in
            let loop = EmbeddedEventLoop()
            return (loop, try Scenarios.recordedClientHello(loop: loop))
        }
    }

    // MARK: - TLS records

    Benchmark("TLS 1.3 record encrypt 16 KiB, server writes", configuration: perThousand) {
        (benchmark: Benchmark, world: Lazy<TLSPair>) in
        try Scenarios.encrypt(try world.get(), count: benchmark.scaledIterations.count)
    } setup: {
        _ = TLSMaterial.shared
        return Lazy { () -> TLSPair in
            let pair = try Scenarios.establishedPair()
            pair.serverSocket.keepsWrites = false
            return pair
        }
    }

    Benchmark("TLS 1.3 record decrypt 16 KiB, server reads", configuration: perThousand) {
        (benchmark: Benchmark, world: Lazy<TLSPair>) in
        let pair = try world.get()
        // The client encrypts this sample's records first; only the server's decryption is measured.
        try Scenarios.prepareRecords(pair, count: benchmark.scaledIterations.count)
        benchmark.startMeasurement()
        try Scenarios.decrypt(pair)
        benchmark.stopMeasurement()
    } setup: {
        _ = TLSMaterial.shared
        return Lazy { try Scenarios.establishedPair() }
    }

    // MARK: - The data path: Connection + GlueHandlers (plain)

    Benchmark("Glue forward 16 KiB client to backend, plain", configuration: perThousand) {
        (benchmark: Benchmark, world: Lazy<PlainPair>) in
        try Scenarios.forwardToBackend(try world.get().pair, count: benchmark.scaledIterations.count)
    } setup: {
        Lazy { try Scenarios.plainPair() }
    }

    Benchmark("Glue forward 16 KiB backend to client, plain", configuration: perThousand) {
        (benchmark: Benchmark, world: Lazy<PlainPair>) in
        try Scenarios.forwardToClient(try world.get().pair, count: benchmark.scaledIterations.count)
    } setup: {
        Lazy { try Scenarios.plainPair() }
    }

    Benchmark("Glue 64 B request and 64 B response, plain", configuration: perThousand) {
        (benchmark: Benchmark, world: Lazy<PlainPair>) in
        try Scenarios.requestResponse(try world.get().pair, count: benchmark.scaledIterations.count)
    } setup: {
        Lazy { try Scenarios.plainPair() }
    }

    // MARK: - Whole connections through the proxy's pipeline

    Benchmark("Connection plain: accept, 64 B each way, graceful close") {
        (benchmark: Benchmark, world: Lazy<DataPathWorld>) in
        try Scenarios.plainConnections(try world.get(), count: benchmark.scaledIterations.count)
    } setup: {
        Lazy { try DataPathWorld() }
    }

    // The in-process counterpart of the end-to-end `handshake` scenario: a TLS client (measured too)
    // against the proxy's whole pipeline — admission, TLS handler, connection, glue, backend wiring.
    Benchmark("Connection TLS 1.3: accept, full handshake, 64 B each way, close, client and proxy") {
        (benchmark: Benchmark, world: Lazy<DataPathWorld>) in
        try Scenarios.tlsConnections(
            try world.get(), client: TLSMaterial.shared.fullClient13, count: benchmark.scaledIterations.count
        )
    } setup: {
        _ = TLSMaterial.shared
        return Lazy { try DataPathWorld(tls: TLSMaterial.shared.server) }
    }
}
