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
// The names are what baselines and Thresholds/ files are matched by: rename one and its history starts
// over. They have no spaces: 1.38's `thresholds update` writes spaces as `_` in the file names, which
// `thresholds check` then does not find.

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
    /// What counts as a change when two runs are compared (`baseline compare/check`) or a run is checked
    /// against the committed thresholds (`thresholds check`, which reads p90 only, and only the metrics the
    /// files in Thresholds/ hold: mallocs, the same on every machine with the same toolchain and libraries).
    /// Mallocs per operation are exact: 1 % is one more malloc in a hundred. Times move with the machine and
    /// whatever else runs on it: an A/A run on the 2-core machine shared with other builds differed by 11 %
    /// at p50, so within 15 % is the same (compare on a quiet machine, and look at p0/p25 too).
    let tolerances: [BenchmarkMetric: BenchmarkThresholds] = [
        .mallocCountTotal: .init(relative: [.p50: 1.0, .p90: 1.0]),
        .wallClock: .init(relative: [.p50: 15.0]),
        .throughput: .init(relative: [.p50: 15.0]),
    ]
    Benchmark.defaultConfiguration = .init(
        metrics: perOperation,
        timeUnits: .microseconds,
        warmupIterations: 3,
        maxDuration: .seconds(3),
        maxIterations: 100_000,
        thresholds: tolerances
    )
    /// For operations of a few µs or less: 1000 per sample, results per operation.
    let perThousand = Benchmark.Configuration(
        metrics: perOperation, timeUnits: .nanoseconds, warmupIterations: 3, scalingFactor: .kilo,
        maxDuration: .seconds(3), maxIterations: 10_000, thresholds: tolerances
    )

    // MARK: - The harness alone (its share of the benchmarks that build channels per operation)

    // Two EmbeddedChannels with a BenchSocket each, activated and closed.
    Benchmark("Harness.channelPair") {
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
    // One new client and server TLSHandler pair each: ClientHello to tickets, then close_notify both ways.
    handshake(
        "TLS13.handshake.full", client: { TLSMaterial.shared.fullClient13 },
        resumed: false, version: "TLSv1.3"
    )
    handshake(
        "TLS13.handshake.resumed", client: { TLSMaterial.shared.resumingClient13 },
        resumed: true, version: "TLSv1.3"
    )
    handshake(
        "TLS12.handshake.full", client: { TLSMaterial.shared.fullClient12 },
        resumed: false, version: "TLSv1.2"
    )
    handshake(
        "TLS12.handshake.resumed", client: { TLSMaterial.shared.resumingClient12 },
        resumed: true, version: "TLSv1.2"
    )

    // The server's part of a full TLS 1.3 handshake alone: a recorded ClientHello in, the server's flight
    // (ServerHello … Finished: key share, certificate, signature) out. Without the client's Finished and
    // the tickets that follow it, which cost little next to the signature.
    Benchmark("TLS13.serverFlight") {
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

    // The server encrypts one 16 KiB record (what a download costs it per record).
    Benchmark("TLS13.record.encrypt16K", configuration: perThousand) {
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

    // The server decrypts one 16 KiB record (an upload).
    Benchmark("TLS13.record.decrypt16K", configuration: perThousand) {
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

    // One 16 KiB read from the client, written and flushed to the backend, the write completed.
    Benchmark("Glue.forward16K.toBackend", configuration: perThousand) {
        (benchmark: Benchmark, world: Lazy<PlainPair>) in
        try Scenarios.forwardToBackend(try world.get().pair, count: benchmark.scaledIterations.count)
    } setup: {
        Lazy { try Scenarios.plainPair() }
    }

    // The same from the backend to the client.
    Benchmark("Glue.forward16K.toClient", configuration: perThousand) {
        (benchmark: Benchmark, world: Lazy<PlainPair>) in
        try Scenarios.forwardToClient(try world.get().pair, count: benchmark.scaledIterations.count)
    } setup: {
        Lazy { try Scenarios.plainPair() }
    }

    // 64 B from the client to the backend, then 64 B back.
    Benchmark("Glue.requestResponse64B", configuration: perThousand) {
        (benchmark: Benchmark, world: Lazy<PlainPair>) in
        try Scenarios.requestResponse(try world.get().pair, count: benchmark.scaledIterations.count)
    } setup: {
        Lazy { try Scenarios.plainPair() }
    }

    // MARK: - Whole connections through the proxy's pipeline

    // A plain connection: accepted, admitted, wired to its backend, 64 B each way, the client's FIN and
    // then the backend's, closed.
    Benchmark("Connection.plain") {
        (benchmark: Benchmark, world: Lazy<DataPathWorld>) in
        try Scenarios.plainConnections(try world.get(), count: benchmark.scaledIterations.count)
    } setup: {
        Lazy { try DataPathWorld() }
    }

    // The in-process counterpart of the end-to-end `handshake` scenario: a TLS client (measured too)
    // against the proxy's whole pipeline — admission, TLS handler, connection, glue, backend wiring.
    Benchmark("Connection.tls13") {
        (benchmark: Benchmark, world: Lazy<DataPathWorld>) in
        try Scenarios.tlsConnections(
            try world.get(), client: TLSMaterial.shared.fullClient13, count: benchmark.scaledIterations.count
        )
    } setup: {
        _ = TLSMaterial.shared
        return Lazy { try DataPathWorld(tls: TLSMaterial.shared.server) }
    }
}
