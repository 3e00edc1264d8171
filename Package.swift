// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "mmlab",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "MMLab", targets: ["MMLab"]),
        .executable(name: "mmlab", targets: ["mmlab"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLua",
            pkgConfig: "lua5.4",
            providers: [.apt(["liblua5.4-dev"])]
        ),
        .target(name: "LuaShim", dependencies: ["CLua"]),
        .target(name: "MMCore"),
        .target(name: "MMLab", dependencies: ["CLua", "LuaShim", "MMCore"],
                resources: [.embedInCode("Runner/fuzz.lua"), .embedInCode("Bindings/api.txt")]),
        .executableTarget(
            name: "mmlab",
            dependencies: ["MMLab", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Native rows of scripts/bench.
        .executableTarget(name: "mmbench", dependencies: ["MMCore"], path: "Benchmarks/MMBench"),
        .testTarget(name: "MMCoreTests", dependencies: ["MMCore"]),
        .testTarget(name: "MMLabTests", dependencies: ["MMLab", "MMCore"]),
    ],
    swiftLanguageModes: [.v5]
)
