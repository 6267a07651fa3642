import GatewayKit
import MultiCall
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
            precondition(!(o.version && o.identCheck != .off), "the manual's options exclude each other")
            let config = o.configPath { $0.hasSuffix(".fc") }
            precondition(config == o.config ?? SockdOptions.frozenConfig, "the frozen file first")
            precondition(o.routePath { _ in false } == o.route, "no route file unless one exists or is given")
            _ = SockdOptions.versionText(route: o.routePath { _ in true })
        } catch {
            precondition(!error.message.isEmpty, "a refusal says why")
        }
    }
}

/// sockd's `--passwd` file: arbitrary bytes. Invariants: a refusal names lines that exist, in
/// order, each once; what is accepted has users without blanks and whole hashes. (Passwords
/// are not checked here: crypt(3)'s cost is the hash's own setting, chosen by the admin.)
enum SockdPasswordHarness {
    static func run(_ data: UnsafeRawBufferPointer) {
        let lines = data.split(separator: 10, omittingEmptySubsequences: false).count
        do {
            let file = try PasswordFile(data, path: "passwd")
            for (user, hash) in file.hashes {
                precondition(!user.isEmpty && !user.utf8.contains { $0 <= 32 }, "a user name without blanks")
                precondition(!hash.isEmpty && !hash.contains(":"), "a whole hash")
            }
        } catch {
            let numbers = error.lines.map(\.line)
            precondition(!numbers.isEmpty && numbers == numbers.sorted() && Set(numbers).count == numbers.count)
            precondition(numbers.allSatisfy { $0 >= 1 && $0 <= lines }, "the lines exist")
        }
    }
}

/// The multi-call executable's choice (``MultiCall/choose(_:)``): arbitrary argv, argv[0]
/// included. Invariants: a tool runs only under its own name (argv[0]'s last component, or
/// the word after `bastion`), with argv[0] that name or path; anything else is an unknown
/// tool or bastion's own word.
enum MultiCallHarness {
    static func run(_ data: UnsafeRawBufferPointer) {
        let argv = Harnesses.arguments(data)
        switch MultiCall.choose(argv) {
        case .run(let index, let arguments):
            let name = Array(MultiCall.tools[index].name.utf8)
            let first = arguments.first ?? []
            precondition(first == name || first.split(separator: UInt8(ascii: "/")).last.map(Array.init) == name)
            precondition(arguments.count == argv.count || arguments.count == argv.count - 1, "argv kept whole")
        case .list, .help, .version:
            precondition(
                argv.isEmpty
                    || argv[0].split(separator: UInt8(ascii: "/")).last.map(Array.init) == Array("bastion".utf8))
        case .unknown(let name):
            precondition(!MultiCall.tools.contains { Array($0.name.utf8) == name }, "a tool's name is never unknown")
        }
    }
}
