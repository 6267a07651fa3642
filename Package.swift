// swift-tools-version:6.0
import PackageDescription

// The tools are linked fully static: a static binary starts in a fraction of the time a
// dynamically linked Swift program needs to load its runtime libraries, which matters for
// tcprulescheck run per lookup and for tcpserver forking per connection. lld is used because
// it links the same code without the GNU linkers' warnings about glibc calls in static code.
//
// Sanitizer builds (scripts/test --sanitize address|thread sets BASTION_SANITIZE) link
// dynamically: AddressSanitizer and ThreadSanitizer need a dynamic executable.
let sanitizing = Context.environment["BASTION_SANITIZE"] != nil
// Their sanitizer options (Sources/CBastion/sanitizers.c) must be exported: the sanitizer
// runtime is a shared library and looks them up dynamically.
let sanitizerOptions = ["__asan_default_options", "__tsan_default_options"].flatMap {
    ["-Xlinker", "--export-dynamic-symbol=\($0)"]
}
let staticTool: [LinkerSetting] = [
    .unsafeFlags(sanitizing ? ["-use-ld=lld"] + sanitizerOptions : ["-static-executable", "-use-ld=lld"])
]

// The hot paths (cdb writing, rule parsing, the generic session worker that accepts) are
// generic across modules; full cross-module optimisation lets the tools specialise them
// instead of going through generic metadata.
let crossModule: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"])]

let package = Package(
    name: "Bastion",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "tcprules", targets: ["tcprules"]),
        .executable(name: "tcprulescheck", targets: ["tcprulescheck"]),
        .executable(name: "tcpserver", targets: ["tcpserver"]),
        .executable(name: "tcpproxy", targets: ["tcpproxy"]),
        .executable(name: "pop3.proxy", targets: ["pop3proxy"]),
        .executable(name: "sockd", targets: ["sockd"]),
        .executable(name: "make_sockdfc", targets: ["make_sockdfc"]),
        .executable(name: "dump_sockdfc", targets: ["dump_sockdfc"]),
        .executable(name: "make_sockdfr", targets: ["make_sockdfr"]),
        .executable(name: "dump_sockdfr", targets: ["dump_sockdfr"]),
        .executable(name: "bastion", targets: ["bastion"]),
    ],
    targets: [
        // C shims for what Swift cannot call directly (variadic syslog, environ).
        .target(name: "CBastion", linkerSettings: [.linkedLibrary("crypt")]),
        // djb's constant database: reader and writer, byte-compatible with cdb_make.
        .target(name: "CDB", swiftSettings: crossModule),
        // tcprules grammar, compilation into cdb, tcpserver's lookup order.
        .target(name: "AccessRules", dependencies: ["CDB"], swiftSettings: crossModule),
        // Daemon plumbing shared by every Bastion daemon.
        .target(name: "GatewayKit", dependencies: ["CBastion"]),
        // The ucspi-tcp trio: command implementations behind thin executables.
        .target(name: "UCSPI", dependencies: ["CDB", "AccessRules", "GatewayKit", "CBastion"]),
        // The event loop and what any session on it uses: timers, acceptors, connectors, DNS and
        // ident queries, child programs, buffered sockets. Knows nothing of relays or daemons.
        .target(name: "Loop", dependencies: ["GatewayKit", "CBastion"]),
        // OpenSSL 3 (Debian's libssl-dev; linked statically into the tools like everything else),
        // with C functions for its macros and the callbacks that run inside a handshake.
        .target(name: "CTLS", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        // TLS on the loop: settings and SNI selection (pure), contexts, connections as relay
        // transports, handshakes without blocking.
        .target(name: "TLS", dependencies: ["CTLS", "Loop", "Relay", "GatewayKit"]),
        // Byte relay between two sockets on a loop: splice, back-pressure, half-close, timeouts.
        .target(name: "Relay", dependencies: ["Loop", "GatewayKit", "CBastion"]),
        // What every daemon's sessions stand on: the session machine contract and its driver.
        .target(name: "Gateway", dependencies: ["Loop", "Relay", "TLS", "GatewayKit", "AccessRules"], swiftSettings: crossModule),
        // tcpproxy: both configuration dialects, service selection, the daemon.
        .target(name: "TCPProxy", dependencies: ["Gateway", "Loop", "Relay", "TLS", "GatewayKit", "AccessRules", "CDB"]),
        // The fuzz harnesses: every parser of outside input behind one call each, shared by the
        // libFuzzer driver (scripts/fuzz) and the unit tests' replay of the corpora.
        .target(
            name: "FuzzHarnesses",
            dependencies: [
                "AccessRules", "CDB", "CTLSFuzz", "Gateway", "GatewayKit", "Loop", "MultiCall", "POP3Proxy", "Relay",
                "Socks", "TCPProxy", "TLS", "UCSPI",
            ]),
        // The tls-server harness's fixed random numbers (OpenSSL's RAND_METHOD, on the harness's
        // thread only): a recorded client's handshake finishes on every replay. No tool links it.
        .target(name: "CTLSFuzz", dependencies: ["CTLS"]),
        .target(name: "POP3Proxy", dependencies: ["AccessRules", "Gateway", "GatewayKit", "Loop", "TLS"]),
        // sockd: the SOCKS4/4a/5 codecs, sockd.conf and sockd.route with their matchers, the %
        // substitutions, the frozen-file format (all pure), and the session the driver runs.
        .target(name: "Socks", dependencies: ["AccessRules", "Gateway", "GatewayKit", "Loop"], swiftSettings: crossModule),
        .executableTarget(name: "tcprules", dependencies: ["UCSPI"], linkerSettings: staticTool),
        .executableTarget(name: "tcprulescheck", dependencies: ["UCSPI"], linkerSettings: staticTool),
        .executableTarget(name: "tcpserver", dependencies: ["UCSPI"], linkerSettings: staticTool),
        .executableTarget(name: "tcpproxy", dependencies: ["TCPProxy"], linkerSettings: staticTool),
        .executableTarget(name: "pop3proxy", dependencies: ["POP3Proxy"], linkerSettings: staticTool),
        // sockd's frozen-file tools: check a text file and freeze it, or print a frozen file.
        .executableTarget(name: "sockd", dependencies: ["Socks"], linkerSettings: staticTool),
        .executableTarget(name: "make_sockdfc", dependencies: ["Socks"], linkerSettings: staticTool),
        .executableTarget(name: "dump_sockdfc", dependencies: ["Socks"], linkerSettings: staticTool),
        .executableTarget(name: "make_sockdfr", dependencies: ["Socks"], linkerSettings: staticTool),
        .executableTarget(name: "dump_sockdfr", dependencies: ["Socks"], linkerSettings: staticTool),
        // Every tool in one executable (what make install and the package install, with a
        // link per tool); the separate executables stay for development and the tests.
        .target(name: "MultiCall", dependencies: ["UCSPI", "TCPProxy", "POP3Proxy", "Socks", "GatewayKit"]),
        .executableTarget(name: "bastion", dependencies: ["MultiCall"], linkerSettings: staticTool),
        .testTarget(name: "CDBTests", dependencies: ["CDB"]),
        .testTarget(name: "AccessRulesTests", dependencies: ["AccessRules", "CDB"]),
        .testTarget(name: "GatewayKitTests", dependencies: ["GatewayKit"]),
        .testTarget(name: "LoopTests", dependencies: ["Loop", "GatewayKit"]),
        .testTarget(name: "RelayTests", dependencies: ["Loop", "Relay", "GatewayKit"]),
        .testTarget(name: "FuzzReplayTests", dependencies: ["FuzzHarnesses", "GatewayKit"]),
        .testTarget(
            name: "GatewayTests",
            dependencies: ["Gateway", "Loop", "Relay", "TLS", "TLSTestSupport", "GatewayKit", "AccessRules"]),
        .testTarget(
            name: "TCPProxyTests",
            dependencies: ["TCPProxy", "Gateway", "Loop", "TLS", "TLSTestSupport", "GatewayKit", "AccessRules"]),
        .testTarget(name: "UCSPITests", dependencies: ["UCSPI", "GatewayKit", "AccessRules"]),
        .testTarget(
            name: "POP3ProxyTests",
            dependencies: ["POP3Proxy", "Gateway", "GatewayKit", "AccessRules", "TLS", "TLSTestSupport"]),
        .testTarget(name: "SocksTests", dependencies: ["Socks", "Gateway", "GatewayKit", "AccessRules"]),
        .testTarget(name: "MultiCallTests", dependencies: ["MultiCall"]),
        // Test certificates (made with the openssl command) for the test targets that need TLS.
        .target(name: "TLSTestSupport", path: "Tests/TLSTestSupport"),
        .testTarget(name: "TLSTests", dependencies: ["TLS", "TLSTestSupport", "Loop", "Relay", "GatewayKit"]),
    ],
    swiftLanguageModes: [.v6]
)

// scripts/fuzz builds the libFuzzer driver with BASTION_FUZZ=1 (and -sanitize=fuzzer,address,
// in a scratch folder of its own): without libFuzzer's runtime it would not link, so the
// ordinary build leaves it out.
if Context.environment["BASTION_FUZZ"] == "1" {
    package.targets += [
        .target(name: "CFuzzer", path: "Fuzz/CFuzzer"),
        .executableTarget(
            name: "bastion-fuzz", dependencies: ["CFuzzer", "FuzzHarnesses", "GatewayKit"], path: "Fuzz/bastion-fuzz",
            linkerSettings: [.unsafeFlags(["-use-ld=lld"])]),
    ]
    package.products += [.executable(name: "bastion-fuzz", targets: ["bastion-fuzz"])]
}

// bench/sockd-frozen builds sockd-load-bench with BASTION_BENCH=1 (text parse against frozen
// decode, in one process); the ordinary build leaves it out.
if Context.environment["BASTION_BENCH"] == "1" {
    package.targets += [
        .executableTarget(name: "sockd-load-bench", dependencies: ["Socks", "GatewayKit"], path: "bench/sockd-load")
    ]
    package.products += [.executable(name: "sockd-load-bench", targets: ["sockd-load-bench"])]
}
