#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import POP3Proxy
import Socks
import TCPProxy
import UCSPI

/// One executable for every tool, as busybox does: the tool is chosen by the name the
/// program was started as (argv[0]'s last component, so `/usr/bin/tcprules` and a link named
/// `tcprules` are tcprules), or named after `bastion`: `bastion TOOL ARGS...`. Each tool then
/// gets exactly the argv it would have had as its own binary, with its own name first, so
/// nothing it prints or exits with changes.
public enum MultiCall {
    /// A tool: its name (the link's), where it is installed, and what it is.
    public struct Tool: Sendable {
        public let name: String
        /// `bin` or `sbin`, where the originals' packages put it.
        public let directory: String
        public let summary: String
        let run: @Sendable ([[UInt8]]) -> Never
    }

    /// Every tool, in the order `--list` prints them.
    public static let tools: [Tool] = [
        Tool(name: "tcprules", directory: "bin", summary: "compile tcpserver's access rules into a cdb") {
            TCPRulesCommand.main($0)
        },
        Tool(name: "tcprulescheck", directory: "bin", summary: "show which rule applies to a client") {
            TCPRulesCheckCommand.main($0)
        },
        Tool(name: "tcpserver", directory: "bin", summary: "accept TCP connections and run a program for each") {
            TCPServerCommand.main($0)
        },
        Tool(name: "tcpproxy", directory: "sbin", summary: "TCP proxy (both tcpproxy manual pages)") {
            TCPProxyCommand.main(strings($0))
        },
        Tool(name: "pop3.proxy", directory: "sbin", summary: "POP3 application gateway") {
            POP3ProxyCommand.main(strings($0))
        },
        Tool(name: "sockd", directory: "sbin", summary: "SOCKS4, SOCKS4a and SOCKS5 server") {
            SockdCommand.main(strings($0))
        },
        Tool(name: "make_sockdfc", directory: "bin", summary: "freeze sockd.conf") {
            FrozenTools.main($0) { FrozenTools.make(.configuration, arguments: $0) }
        },
        Tool(name: "dump_sockdfc", directory: "bin", summary: "print a frozen sockd.conf as text") {
            FrozenTools.main($0) { FrozenTools.dump(.configuration, arguments: $0) }
        },
        Tool(name: "make_sockdfr", directory: "bin", summary: "freeze sockd.route") {
            FrozenTools.main($0) { FrozenTools.make(.routes, arguments: $0) }
        },
        Tool(name: "dump_sockdfr", directory: "bin", summary: "print a frozen sockd.route as text") {
            FrozenTools.main($0) { FrozenTools.dump(.routes, arguments: $0) }
        },
    ]

    /// The multi-call binary's own name.
    public static let name = "bastion"

    /// What an argv asks for.
    public enum Choice: Equatable {
        /// Run `tool` (an index into ``tools``) with this argv (its name first).
        case run(Int, [[UInt8]])
        /// `bastion --list`.
        case list
        /// `bastion --help`, `bastion -h` or `bastion` alone.
        case help
        /// `bastion --version`.
        case version
        /// No such tool: the name given.
        case unknown([UInt8])
    }

    /// The last component of a path.
    static func basename(_ path: [UInt8]) -> [UInt8] {
        guard let slash = path.lastIndex(of: UInt8(ascii: "/")) else { return path }
        return Array(path[(slash + 1)...])
    }

    static func index(of name: [UInt8]) -> Int? {
        tools.firstIndex { $0.name.utf8.elementsEqual(name) }
    }

    /// Decides from argv alone (pure).
    public static func choose(_ argv: [[UInt8]]) -> Choice {
        let called = basename(argv.first ?? Array(name.utf8))
        if let tool = index(of: called) { return .run(tool, argv) }
        guard called == Array(name.utf8) else { return .unknown(called) }
        guard argv.count >= 2 else { return .help }
        switch String(decoding: argv[1], as: UTF8.self) {
        case "--list": return .list
        case "--help", "-h": return .help
        case "--version": return .version
        default:
            let asked = argv[1]
            guard let tool = index(of: asked) else { return .unknown(asked) }
            return .run(tool, Array(argv.dropFirst()))
        }
    }

    /// `--list`: one name per line (what `make install` links).
    public static var listText: String { tools.map { $0.name + "\n" }.joined() }

    public static var helpText: String {
        var text = """
            usage: bastion TOOL [ARGS...]   (or run a link named after the tool)
                   bastion --list | --help | --version

            Bastion's tools, in one executable:

            """
        for tool in tools { text += "  \(tool.name.padding(to: 15))\(tool.summary)\n" }
        return text
    }

    /// The entry point of the `bastion` executable.
    public static func main(_ argv: [[UInt8]] = Arguments.raw) -> Never {
        switch choose(argv) {
        case .run(let tool, let arguments):
            tools[tool].run(arguments)
        case .list:
            write(listText)
        case .help:
            write(helpText)
        case .version:
            write("bastion \(BastionVersion.string)\n")
        case .unknown(let name):
            Stderr.line("bastion: unknown tool: \(LogFormat.printable(name.text)) (bastion --list names them)")
            exit(100)
        }
    }

    private static func write(_ text: String) -> Never {
        do { try FD.writeAll(1, Array(text.utf8)) } catch {
            Stderr.line("bastion: unable to write to standard output: \(error)")
            exit(1)
        }
        exit(0)
    }

    /// argv as CommandLine.arguments gives it (invalid UTF-8 repaired).
    static func strings(_ argv: [[UInt8]]) -> [String] { argv.map { String(decoding: $0, as: UTF8.self) } }
}

extension String {
    fileprivate func padding(to width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
