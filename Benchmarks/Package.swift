// swift-tools-version: 6.1
import PackageDescription

// secproxy's in-process micro benchmarks (ordo-one/benchmark): TLS handshakes and records through
// `TLSHandler`, and bytes through the data path (`Connection` + `GlueHandler`s), on `EmbeddedChannel`s.
// A package of its own, so that `swift build` / `swift test` of secproxy (and CI) never build it.
//
//     swift package --package-path Benchmarks benchmark            # from the repository root
//     scripts/bench.sh micro [filter]                              # the same, via the script
let package = Package(
    name: "secproxy-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "secproxy", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // The worlds the benchmarks run in (a socket stand-in, TLS and data-path pairs on EmbeddedChannels)
        // and the operations they measure; shared by the benchmarks and the profiling driver.
        .target(
            name: "SecProxyBenchKit",
            dependencies: [
                .product(name: "SecProxyBenchmarkSupport", package: "secproxy"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            // The harness's own exclusivity checks are not what is measured; secproxy's modules keep theirs.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
        ),
        .executableTarget(
            name: "SecProxyBenchmarks",
            dependencies: [
                "SecProxyBenchKit",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SecProxyBenchmarkSupport", package: "secproxy"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Benchmarks/SecProxyBenchmarks",
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        ),
        // One scenario, N times, nothing else: for perf and callgrind (Benchmarks/README.md).
        .executableTarget(
            name: "SecProxyProfile",
            dependencies: [
                "SecProxyBenchKit",
                .product(name: "SecProxyBenchmarkSupport", package: "secproxy"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ]
)
