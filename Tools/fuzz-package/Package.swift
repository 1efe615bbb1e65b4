// swift-tools-version:5.4
// Tools version 5.4 on purpose: from 5.5 on, SwiftPM renames an executable's entry point to
// `<module>_main` and links with `--defsym main=<module>_main`; these harnesses have no main
// (libFuzzer supplies it), so with 5.5+ the link fails with "undefined symbol 'FuzzTar_main'".
import PackageDescription

/// libFuzzer harnesses over Ferry's parsers of untrusted bytes. Built only by `Tools/fuzz`
/// (`-sanitize=fuzzer,address`, scratch path `.build-fuzz`), never by the root package's build.
let harness: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

let package = Package(
    name: "FerryFuzz",
    dependencies: [.package(name: "Ferry", path: "../.."),
                   .package(name: "swift-log", url: "https://github.com/apple/swift-log", from: "1.6.0")],
    targets: [
        .executableTarget(name: "FuzzTar", dependencies: [.product(name: "OCI", package: "Ferry")],
                          swiftSettings: harness),
        .executableTarget(name: "FuzzEROFS", dependencies: [.product(name: "EROFS", package: "Ferry")],
                          swiftSettings: harness),
        .executableTarget(name: "FuzzBootstrapMetadata", dependencies: [.product(name: "Blob", package: "Ferry"),
                                                                        .product(name: "FerrySystem", package: "Ferry")],
                          swiftSettings: harness),
        .executableTarget(name: "FuzzCachefiles", dependencies: [.product(name: "FerrySystem", package: "Ferry")],
                          swiftSettings: harness),
        .executableTarget(name: "FuzzFanotify", dependencies: [.product(name: "FerrySystem", package: "Ferry")],
                          swiftSettings: harness),
        .executableTarget(name: "FuzzControl", dependencies: [.product(name: "Daemon", package: "Ferry"),
                                                              .product(name: "Logging", package: "swift-log")],
                          swiftSettings: harness),
    ]
)
