// A driver for profilers: runs one of the benchmarks' scenarios COUNT times with nothing else around it
// (no benchmark framework, no malloc interposer), the measured part inside `measuredRegion`, so that
//
//     valgrind --tool=callgrind --toggle-collect='*measuredRegion*' SecProxyProfile glue16k 10000
//
// counts the instructions and the calls (swift_retain, swift_release, malloc, …) of exactly COUNT
// operations, and `perf record -g SecProxyProfile tls13-full 2000` samples little else.
//
//     SecProxyProfile SCENARIO [COUNT]
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import NIOCore
import NIOEmbedded
import SecProxyBenchKit
import SecProxyTLS

/// Runs `body` COUNT times' worth; kept out of line so that callgrind can collect inside it only.
@inline(never)
func measuredRegion(_ body: () throws -> Void) rethrows {
    try body()
}

/// A scenario: made (setup, not measured), then run for `count` operations.
struct Scenario {
    let summary: String
    let run: (_ count: Int) throws -> (() throws -> Void)
}

let scenarios: [(String, Scenario)] = [
    (
        "harness",
        Scenario(summary: "EmbeddedChannel pair open, close (the harness alone)") { count in
            let loop = EmbeddedEventLoop()
            try Scenarios.channelPair(loop: loop)
            return { for _ in 0..<count { try Scenarios.channelPair(loop: loop) } }
        }
    ),
    (
        "tls13-full",
        Scenario(summary: "TLS 1.3 full handshake, client and server") { count in
            let client = TLSMaterial.shared.fullClient13
            let loop = try Scenarios.loopWithSession(for: client)
            return {
                for _ in 0..<count {
                    try Scenarios.handshake(loop: loop, client: client, resumed: false, version: "TLSv1.3")
                }
            }
        }
    ),
    (
        "tls13-resume",
        Scenario(summary: "TLS 1.3 resumed handshake, client and server") { count in
            let client = TLSMaterial.shared.resumingClient13
            let loop = try Scenarios.loopWithSession(for: client)
            return {
                for _ in 0..<count {
                    try Scenarios.handshake(loop: loop, client: client, resumed: true, version: "TLSv1.3")
                }
            }
        }
    ),
    (
        "tls12-full",
        Scenario(summary: "TLS 1.2 full handshake, client and server") { count in
            let client = TLSMaterial.shared.fullClient12
            let loop = try Scenarios.loopWithSession(for: client)
            return {
                for _ in 0..<count {
                    try Scenarios.handshake(loop: loop, client: client, resumed: false, version: "TLSv1.2")
                }
            }
        }
    ),
    (
        "server-flight",
        Scenario(summary: "TLS 1.3 server flight for a recorded ClientHello, server only") { count in
            let loop = EmbeddedEventLoop()
            let hello = try Scenarios.recordedClientHello(loop: loop)
            try Scenarios.serverFlight(loop: loop, clientHello: hello)
            return { for _ in 0..<count { try Scenarios.serverFlight(loop: loop, clientHello: hello) } }
        }
    ),
    (
        "encrypt",
        Scenario(summary: "TLS 1.3 record encrypt 16 KiB, server writes") { count in
            let pair = try Scenarios.establishedPair()
            pair.serverSocket.keepsWrites = false
            try Scenarios.encrypt(pair, count: 10)
            return { try Scenarios.encrypt(pair, count: count) }
        }
    ),
    (
        "decrypt",
        Scenario(summary: "TLS 1.3 record decrypt 16 KiB, server reads") { count in
            let pair = try Scenarios.establishedPair()
            try Scenarios.prepareRecords(pair, count: 10)
            try Scenarios.decrypt(pair)
            try Scenarios.prepareRecords(pair, count: count)
            return { try Scenarios.decrypt(pair) }
        }
    ),
    (
        "glue16k",
        Scenario(summary: "Glue forward 16 KiB client to backend, plain") { count in
            let (_, pair) = try Scenarios.plainPair()
            try Scenarios.forwardToBackend(pair, count: 10)
            return { try Scenarios.forwardToBackend(pair, count: count) }
        }
    ),
    (
        "glue64",
        Scenario(summary: "Glue 64 B request and 64 B response, plain") { count in
            let (_, pair) = try Scenarios.plainPair()
            try Scenarios.requestResponse(pair, count: 10)
            return { try Scenarios.requestResponse(pair, count: count) }
        }
    ),
    (
        "conn-plain",
        Scenario(summary: "Connection plain: accept, 64 B each way, graceful close") { count in
            let world = try DataPathWorld()
            try Scenarios.plainConnections(world, count: 10)
            return { try Scenarios.plainConnections(world, count: count) }
        }
    ),
    (
        "conn-tls",
        Scenario(summary: "Connection TLS 1.3: accept, full handshake, 64 B each way, close") { count in
            let world = try DataPathWorld(tls: TLSMaterial.shared.server)
            let client = TLSMaterial.shared.fullClient13
            try Scenarios.tlsConnections(world, client: client, count: 2)
            return { try Scenarios.tlsConnections(world, client: client, count: count) }
        }
    ),
]

@MainActor
func usage() -> Never {
    var text = "usage: SecProxyProfile SCENARIO [COUNT]\n\nscenarios:\n"
    for (name, scenario) in scenarios {
        text += "  \(name.padding(toLength: 14, withPad: " ", startingAt: 0)) \(scenario.summary)\n"
    }
    FileHandle.standardError.write(Data(text.utf8))
    exit(2)
}

let arguments = CommandLine.arguments.dropFirst()
guard let name = arguments.first, let scenario = scenarios.first(where: { $0.0 == name })?.1 else { usage() }
let count = arguments.dropFirst().first.flatMap { Int($0) } ?? 1000
guard count > 0 else { usage() }

do {
    let body = try scenario.run(count)
    let start = NIODeadline.now()
    try measuredRegion(body)
    let elapsed = NIODeadline.now() - start
    let perOperation = Double(elapsed.nanoseconds) / Double(count) / 1000
    print("\(name): \(count) operations, \(String(format: "%.3f", perOperation)) µs each (wall clock)")
} catch {
    FileHandle.standardError.write(Data("\(name): \(error)\n".utf8))
    exit(1)
}
