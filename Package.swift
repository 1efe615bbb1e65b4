// swift-tools-version:6.1
import PackageDescription

/// Settings every Ferry target shares: Swift 6 mode is the default with tools 6.x; the
/// upcoming features below make the compiler check module boundaries.
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Ferry",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
        .executable(name: "ferryd", targets: ["ferryd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // The five C libraries (plus zlib for gzip layers) behind one umbrella header: two
        // system-library modules that both include <sys/select.h> do not build together.
        .systemLibrary(name: "CFerry", path: "Sources/CFerry", pkgConfig: "libcurl",
                       providers: [.apt(["liblz4-dev", "libzstd-dev", "libssl-dev",
                                         "libcurl4-openssl-dev", "liburing-dev", "zlib1g-dev"])]),
        .target(name: "FerrySystem", dependencies: ["CFerry"], swiftSettings: strict),
        .target(name: "EROFS", swiftSettings: strict),
        .target(name: "OCI", dependencies: ["FerrySystem"], swiftSettings: strict),
        .target(name: "Blob", dependencies: ["FerrySystem"], swiftSettings: strict),
        .target(name: "Converter", dependencies: ["EROFS", "OCI", "Blob", "FerrySystem", "Registry",
                                                  .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .target(name: "Registry", dependencies: ["OCI", "FerrySystem",
                                                 .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .target(name: "Daemon", dependencies: ["Blob", "EROFS", "FerrySystem",
                                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .target(name: "KernelBackends", dependencies: ["Daemon", "Blob", "FerrySystem",
                                                       .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        // ferryd's composition: configuration → backend, sources, image resolution → services.
        .target(name: "FerryService", dependencies: ["Daemon", "KernelBackends", "Registry", "OCI", "Blob", "FerrySystem",
                                                     .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .target(name: "FerryCLI", dependencies: ["Converter", "Daemon", "FerryService", "KernelBackends", "EROFS", "OCI", "Blob", "Registry",
                                                 .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                                 .product(name: "Logging", package: "swift-log")],
                swiftSettings: strict),
        .executableTarget(name: "ferry", dependencies: ["FerryCLI"], swiftSettings: strict),
        .executableTarget(name: "ferryd", dependencies: ["FerryCLI"], swiftSettings: strict),

        .testTarget(name: "FerrySystemTests", dependencies: ["FerrySystem"], swiftSettings: strict),
        .testTarget(name: "EROFSTests", dependencies: ["EROFS"], swiftSettings: strict),
        .testTarget(name: "OCITests", dependencies: ["OCI", "FerrySystem"], swiftSettings: strict),
        .testTarget(name: "BlobTests", dependencies: ["Blob", "FerrySystem"], swiftSettings: strict),
        .testTarget(name: "ConverterTests", dependencies: ["Converter", "EROFS", "OCI", "Blob", "FerrySystem"], swiftSettings: strict),
        .testTarget(name: "DaemonTests", dependencies: ["Daemon", "Blob", "FerrySystem"], swiftSettings: strict),
        .testTarget(name: "RegistryTests", dependencies: ["Registry", "OCI", "FerrySystem"], exclude: ["Fixtures"],
                    swiftSettings: strict),
        .testTarget(name: "IntegrationTests", dependencies: ["Converter", "EROFS", "OCI", "Blob", "Registry", "FerrySystem", "Daemon", "KernelBackends", "FerryService"],
                    exclude: ["Fixtures"], swiftSettings: strict),
    ]
)
