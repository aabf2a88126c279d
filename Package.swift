// swift-tools-version:6.0
import PackageDescription

// Release builds are what we time. Only the engine, whose loops are the measured hot kernels,
// runs without overflow and bounds traps; every module that reads untrusted bytes (GGUF,
// safetensors, tokenizer.json, protobuf frames, checkpoints, configurations) keeps them, so a bad
// index in a file is a trap, never a read out of bounds (BENCHMARKS.md: what this costs).
// The engine's Swift kernels are written for AVX2 + FMA (any x86-64 CPU since 2013 or so).
let fast: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
    .unsafeFlags(["-target-cpu", "haswell"]),
]
let checked: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]

let package = Package(
    name: "Charter",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "charter", targets: ["Charter"]),
        .executable(name: "charter-fuzz", targets: ["CharterFuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // The /metrics and /healthz endpoint of coordinators and workers (--metrics-bind).
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // libzmq from Debian's libzmq3-dev; only the ZeroMQ module imports it.
        .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ"),
        // OpenBLAS is not linked: Engine/BLAS.swift opens it with dlopen after choosing the
        // kernel type, because OpenBLAS picks its kernels in a load-time constructor.
        // Bytes a socket can send without a copy, apart from the socket library.
        .target(name: "Buffers"),
        .target(name: "ZeroMQ", dependencies: ["CZeroMQ", "Buffers"]),
        // CRC-32C with the SSE4.2 instruction, for weight chunks.
        .target(name: "CCRC32C"),
        // The protocol in code: generated message headers (scripts/gen-protocol.sh) and frame layout.
        .target(name: "Wire", dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        // The AVX-512 projection kernel, in C because Swift cannot compile one function for a CPU
        // the rest of the binary may not have; Engine/Kernel.swift picks it at run time.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "Engine", dependencies: ["CKernels"], swiftSettings: fast, linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "Tokenizer", swiftSettings: checked),
        .target(name: "Formats", dependencies: ["Engine", "Tokenizer", "CCRC32C"], swiftSettings: checked),
        .target(name: "Alignment", dependencies: ["Engine", "Tokenizer", "Formats", "Yams", .product(name: "Logging", package: "swift-log")],
                swiftSettings: checked),
        // A judge behind an OpenAI-compatible server (HTTP through Foundation's URLSession).
        .target(name: "Endpoint", dependencies: ["Alignment"]),
        // Prometheus's text format served over SwiftNIO's HTTP/1 server: what an operator scrapes.
        .target(name: "Telemetry", dependencies: [.product(name: "Prometheus", package: "swift-prometheus"),
                                                  .product(name: "NIOCore", package: "swift-nio"),
                                                  .product(name: "NIOPosix", package: "swift-nio"),
                                                  .product(name: "NIOHTTP1", package: "swift-nio")], swiftSettings: checked),
        // `charter serve`: an OpenAI-compatible API over the engine, batching concurrent requests.
        .target(name: "Serve", dependencies: ["Engine", "Tokenizer", "Formats", "Telemetry",
                                              .product(name: "NIOCore", package: "swift-nio"),
                                              .product(name: "NIOHTTP1", package: "swift-nio")], swiftSettings: checked),
        // Coordinator and workers: scheduling, weight broadcast, processes.
        .target(name: "Cluster", dependencies: ["Engine", "Tokenizer", "Formats", "Alignment", "Endpoint", "Wire", "ZeroMQ", "Buffers", "CCRC32C", "Telemetry",
                                                  .product(name: "Prometheus", package: "swift-prometheus"),
                                                  .product(name: "Logging", package: "swift-log")], swiftSettings: checked),
        .executableTarget(
            name: "Charter",
            dependencies: [
                "Engine", "Formats", "Tokenizer", "Alignment", "Endpoint", "Cluster", "ZeroMQ", "Buffers", "Telemetry", "Serve",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: checked),
        // Fuzz targets for every parser of outside input: libFuzzer's entry when built by
        // scripts/fuzz.sh, otherwise a replayer of the seed corpora in fuzz/ (run by the tests).
        .target(name: "CFuzzDriver"),
        .executableTarget(name: "CharterFuzz", dependencies: ["Engine", "Formats", "Tokenizer", "Alignment", "Wire", "CFuzzDriver"], swiftSettings: checked),
        .testTarget(name: "EngineTests", dependencies: ["Engine"]),
        .testTarget(name: "ZeroMQTests", dependencies: ["ZeroMQ", "Buffers"]),
        .testTarget(name: "WireTests", dependencies: ["Wire"]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Alignment", "Telemetry", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "FormatsTests", dependencies: ["Formats", "Engine", "Tokenizer"]),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer", "Formats"]),
        .testTarget(name: "ReferenceTests", dependencies: ["Engine", "Formats", "Tokenizer"]),
        .testTarget(name: "TrainingTests", dependencies: ["Engine", "Formats", "Tokenizer", "Alignment"]),
        .testTarget(name: "AlignmentTests", dependencies: ["Alignment", "Engine", "Formats", "Tokenizer", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "EndpointTests", dependencies: ["Endpoint"]),
        // Runs the built `charter` binary; the dependency makes `swift test` build it first.
        .testTarget(name: "CLITests", dependencies: ["Charter", "CharterFuzz", "ZeroMQ", "Wire"]),
    ]
)
