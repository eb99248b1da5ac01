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
            ]
        ),
        // The daemon: prepare, run, reload, signals, logging format.
        .target(
            name: "SecProxy",
            dependencies: [
                "SecProxyConfig", "SecProxyTLS", "SecProxyCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
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
