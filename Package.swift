// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "secproxy",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "secproxy", targets: ["secproxy"]),
        .library(name: "SecProxy", targets: ["SecProxy"]),
        // For Benchmarks/ only (a package of its own, outside CI): the modules its benchmarks drive.
        .library(
            name: "SecProxyBenchmarkSupport",
            targets: ["SecProxyConfig", "SecProxyCore", "SecProxyTLS", "SecProxyTestSupport"]
        ),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        // Metrics: the data path holds swift-metrics handles; the daemon exports them in the Prometheus format.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // The daemon as one ServiceGroup: graceful shutdown, signals.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // The system OpenSSL 3 (libssl-dev).
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        // One-line C wrappers for OpenSSL's function-like macros, which Swift cannot import.
        .target(name: "CSecProxyOpenSSL", dependencies: ["COpenSSL"]),
        // TOML -> model -> semantic checks -> diagnostics. Pure Swift.
        .target(name: "SecProxyConfig"),
        // The only Swift that touches OpenSSL.
        .target(
            name: "SecProxyTLS",
            dependencies: [
                "COpenSSL", "CSecProxyOpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The data path.
        .target(
            name: "SecProxyCore",
            dependencies: [
                "SecProxyConfig", "SecProxyTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                // Handles only (ListenerMetrics); which backend exports them is the daemon's business.
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // The daemon: prepare, run, reload, signals, logging format, admin endpoint and metrics.
        .target(
            name: "SecProxy",
            dependencies: [
                "SecProxyConfig", "SecProxyTLS", "SecProxyCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "secproxy",
            dependencies: [
                "SecProxy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "SecProxyTestSupport",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "SecProxyConfigTests", dependencies: ["SecProxyConfig"], exclude: ["Golden"]),
        .testTarget(
            name: "SecProxyTLSTests",
            dependencies: [
                "SecProxyTLS", "SecProxyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // In-process unit tests of the data path: state machines and handlers on EmbeddedChannel.
        .testTarget(
            name: "SecProxyCoreTests",
            dependencies: [
                "SecProxyCore", "SecProxyConfig", "SecProxyTLS", "SecProxyTestSupport", "COpenSSL",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // In-process tests of the daemon: prepare, reload, notify order, the admin endpoint and metrics.
        .testTarget(
            name: "SecProxyTests",
            dependencies: [
                "SecProxy", "SecProxyCore", "SecProxyConfig", "SecProxyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Black-box tests: they spawn the built `secproxy` binary against real TLS clients and backends.
        .testTarget(
            name: "SecProxyEndToEndTests",
            dependencies: [
                "SecProxyCore", "SecProxyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SecProxyCLITests",
            dependencies: [
                "SecProxyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ]
)
