// swift-tools-version:6.0
// libFuzzer targets for secproxy, a package of its own so that the main build and CI stay lean.
// Build and run one with `scripts/fuzz.sh TARGET SECONDS` (it passes -sanitize=fuzzer,address).
import PackageDescription

let package = Package(
    name: "secproxy-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "secproxy", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // TOML parser + the whole configuration check (ConfigurationLoader.load).
        .executableTarget(
            name: "FuzzConfig",
            dependencies: [.product(name: "SecProxy", package: "secproxy")]
        ),
        // PROXY protocol v1/v2 decoder (ProxyProtocolHeader.parse).
        .executableTarget(
            name: "FuzzProxyProtocol",
            dependencies: [
                .product(name: "SecProxy", package: "secproxy"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Server-side TLSHandler on an EmbeddedChannel, fed arbitrary bytes after a real ClientHello.
        .executableTarget(
            name: "FuzzTLSHandler",
            dependencies: [
                .product(name: "SecProxy", package: "secproxy"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ]
)
