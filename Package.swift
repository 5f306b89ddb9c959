// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "authorizer",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "authorizer", targets: ["authorizer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
    ],
    targets: [
        // RESP formatting and parsing from Debian's libhiredis-dev.
        .systemLibrary(
            name: "CHiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // Pure domain: amounts, requests, descriptors, rules. Standard library only.
        .target(name: "AuthorizerCore"),
        // Redis over SwiftNIO with hiredis doing the RESP work.
        .target(
            name: "RedisWire",
            dependencies: [
                "CHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The ledger streams as Redis keeps them: stream ids, entry and XINFO
        // decoding, consumer-group info and the one definition of replayer lag.
        .target(
            name: "Ledger",
            dependencies: [
                "AuthorizerCore",
                "RedisWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Terminal server, authorization flow, per-account gate, rules cache.
        .target(
            name: "AuthorizerServer",
            dependencies: [
                "AuthorizerCore",
                "RedisWire",
                "Ledger",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Statements stream -> SQLite (exactly once), notifications, audit,
        // and the webhooks: signed events delivered from an outbox of their own.
        .target(
            name: "Replayer",
            dependencies: [
                "AuthorizerCore",
                "RedisWire",
                "Ledger",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Open- and closed-loop load generator over the terminal protocol.
        .target(
            name: "LoadGenerator",
            dependencies: [
                "AuthorizerCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // Reads a server's Prometheus /metrics (for `authorizer top`).
        .target(
            name: "MetricsScrape",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "authorizer",
            dependencies: [
                "AuthorizerCore",
                "RedisWire",
                "AuthorizerServer",
                "Ledger",
                "Replayer",
                "LoadGenerator",
                "MetricsScrape",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "AuthorizerCoreTests", dependencies: ["AuthorizerCore"]),
        .testTarget(name: "AuthorizerServerTests", dependencies: ["AuthorizerServer"]),
        .testTarget(name: "RedisWireTests", dependencies: ["RedisWire", "AuthorizerCore"]),
        .testTarget(name: "LedgerTests", dependencies: ["Ledger", "RedisWire"]),
        .testTarget(name: "LoadGeneratorTests", dependencies: ["LoadGenerator"]),
        .testTarget(
            name: "ReplayerTests",
            dependencies: ["Replayer", "Ledger", "AuthorizerCore", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .testTarget(
            name: "MetricsScrapeTests",
            dependencies: [
                "MetricsScrape",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "AuthorizerCore",
                "AuthorizerServer",
                "Ledger",
                "RedisWire",
                "Replayer",
                "MetricsScrape",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ]
)
