// swift-tools-version:6.0
//
// bitsec: an embeddable security runtime. The product is a C ABI (libbitsec.so plus
// include/bitsec.h); the Swift targets are its implementation. See DESIGN.md §1.
import PackageDescription
import Foundation  // Package.swift only: to locate the linker version script.

let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path

/// ABI major version: it is the SONAME suffix and must match `bitsecABIVersion`.
let abiMajor = "1"

let strictSwift: [SwiftSetting] = [
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "bitsec",
    products: [
        // libbitsec.so: Swift stdlib linked statically, only bitsec_* exported, SONAME libbitsec.so.1.
        .library(name: "bitsec", type: .dynamic, targets: ["BitsecLink"]),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // The core: pure Swift over OpenSSL and hiredis, no C-ABI concerns.
        .target(
            name: "BitsecCore",
            dependencies: ["COpenSSL", "CHiredis"],
            swiftSettings: strictSwift
        ),
        // The C ABI: @c functions only; decode arguments, call the core, encode results.
        .target(
            name: "Bitsec",
            dependencies: ["BitsecCore"],
            swiftSettings: strictSwift
        ),
        // Link-only target of the shared library: carries the flags that must apply to
        // libbitsec.so and never to the test executables (static stdlib, export list, SONAME).
        .target(
            name: "BitsecLink",
            dependencies: ["Bitsec"],
            exclude: ["exports.map"],
            linkerSettings: [
                .unsafeFlags([
                    "-static-stdlib",
                    "-use-ld=lld",
                    "-Xlinker", "--version-script=\(root)/Sources/BitsecLink/exports.map",
                    "-Xlinker", "-soname=libbitsec.so.\(abiMajor)",
                    "-Xlinker", "-z", "-Xlinker", "now",
                    "-Xlinker", "-z", "-Xlinker", "relro",
                ]),
            ]
        ),
        .testTarget(
            name: "BitsecCoreTests",
            dependencies: ["BitsecCore"]
        ),
        .testTarget(
            name: "BitsecABITests",
            dependencies: ["Bitsec"]
        ),
    ]
)

// The libFuzzer harness (docs/fuzzing.md): only with BITSEC_FUZZ=1, so ordinary
// builds never see it. `make fuzz` builds it into .build-fuzz with -sanitize=fuzzer,address.
if ProcessInfo.processInfo.environment["BITSEC_FUZZ"] == "1" {
    package.products.append(.executable(name: "bitsec-fuzz", targets: ["BitsecFuzz"]))
    package.targets += [
        // main(): hands over to libFuzzer's driver (LLVMFuzzerRunDriver).
        .target(name: "BitsecFuzzShim", path: "fuzz/Sources/BitsecFuzzShim"),
        .executableTarget(
            name: "BitsecFuzz",
            dependencies: ["Bitsec", "BitsecFuzzShim", "COpenSSL"],
            path: "fuzz/Sources/BitsecFuzz",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ]
}
