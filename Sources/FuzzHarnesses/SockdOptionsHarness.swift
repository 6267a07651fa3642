import GatewayKit
import Socks

/// sockd's command line: arbitrary words. Invariants: a refusal says why; what is accepted
/// has ports from 1 to 65535, an ident timeout in range, at most one of the manual's options,
/// and the files it chooses are the given ones or the manual's.
enum SockdOptionsHarness {
    static func run(_ data: UnsafeRawBufferPointer) {
        let words = Harnesses.arguments(data).map { String(decoding: $0, as: UTF8.self) }
        do {
            let o = try SockdOptions.parse(words)
            precondition(o.listen.allSatisfy { $0.port >= 1 && $0.host?.isEmpty != true }, "a usable listen address")
            precondition((1...3600).contains(o.identTimeout), "ident timeout in range")
            precondition(!(o.version && o.identCheck != .none), "the manual's options exclude each other")
            let config = o.configPath { $0.hasSuffix(".fc") }
            precondition(config == o.config ?? SockdOptions.frozenConfig, "the frozen file first")
            precondition(o.routePath { _ in false } == o.route, "no route file unless one exists or is given")
            _ = SockdOptions.versionText(route: o.routePath { _ in true })
        } catch {
            precondition(!error.message.isEmpty, "a refusal says why")
        }
    }
}
