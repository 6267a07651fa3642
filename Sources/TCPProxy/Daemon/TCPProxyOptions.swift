import GatewayKit
import TLS

/// tcpproxy's command line: spreadspace's options (short and long) and Zekoll's, with long
/// names where Zekoll's letters collide with spreadspace's (`--bind` for Zekoll's -b,
/// `--logname` for -l, `--standalone` for -s, `--timeout` for -t; Zekoll's -p pidfile is -P).
public struct TCPProxyOptions: Equatable, Sendable {
    // spreadspace's
    public var daemonize = true  // -D --nodaemonize clears
    public var username: String?  // -u --username
    public var groupname: String?  // -g --groupname
    public var chroot: String?  // -C --chroot
    public var pidFile: String?  // -P --write-pid
    public var logTargets: [LogTarget] = []  // -L --log (repeatable)
    public var debug = false  // -U --debug
    public var localAddress: String?  // -l --local-addr
    public var localResolv: AddressFamilyPreference = .any  // -t --local-resolv
    public var localPort: String?  // -p --local-port
    public var remoteAddress: String?  // -r --remote-addr
    public var remoteResolv: AddressFamilyPreference = .any  // -R --remote-resolv
    public var remotePort: String?  // -o --remote-port
    public var sourceAddress: String?  // -s --source-addr
    public var bufferSize = 10240  // -b --buffer-size
    public var configPath: String?  // -c --config, Zekoll's -f
    // Zekoll's
    public var server: String?  // positional: host[:port] or a handler path
    public var serverArguments: [String] = []  // words after a handler path
    public var accessControlProgram: String?  // -a --acp
    public var variablePrefix: String?  // -v --varprefix
    public var writefile: String?  // -w --writefile
    public var clearEnvironment = false  // -y --clear-environment
    public var debugTrace = false  // -d --debug-trace: the trace `debug NAME` turns on, for every handler
    public var list = 0  // -z (1), -zz (2), -zzz (3: the configuration written back)
    public var bind: (interface: String?, port: String)? = nil  // --bind [interface:]port
    public var logname: String?  // --logname
    public var standalone = false  // --standalone
    public var timeout: Int?  // --timeout
    // Bastion's
    public var rules: String?  // --rules FILE.cdb
    public var proxyProtocol: ProxyProtocolVersion?  // --proxy-protocol v1|v2
    public var clientNames = true  // --no-client-names clears
    /// --tls-cert, --tls-key (pairs), --tls-ocsp, --tls-client-ca, --tls-protocols, --tls-ciphers,
    /// --remote-tls (or --remote-tls-insecure), --remote-tls-ca, --remote-tls-name.
    public var tls = TLSDirectives()
    public var help = false  // -h --help

    public init() {}

    public static func == (a: TCPProxyOptions, b: TCPProxyOptions) -> Bool {
        a.daemonize == b.daemonize && a.username == b.username && a.groupname == b.groupname && a.chroot == b.chroot
            && a.pidFile == b.pidFile && a.logTargets == b.logTargets && a.debug == b.debug
            && a.localAddress == b.localAddress && a.localResolv == b.localResolv && a.localPort == b.localPort
            && a.remoteAddress == b.remoteAddress && a.remoteResolv == b.remoteResolv
            && a.remotePort == b.remotePort && a.sourceAddress == b.sourceAddress && a.bufferSize == b.bufferSize
            && a.configPath == b.configPath && a.server == b.server && a.serverArguments == b.serverArguments
            && a.accessControlProgram == b.accessControlProgram && a.variablePrefix == b.variablePrefix
            && a.writefile == b.writefile && a.clearEnvironment == b.clearEnvironment
            && a.debugTrace == b.debugTrace && a.list == b.list
            && a.bind?.interface == b.bind?.interface && a.bind?.port == b.bind?.port && a.logname == b.logname
            && a.standalone == b.standalone && a.timeout == b.timeout && a.rules == b.rules
            && a.proxyProtocol == b.proxyProtocol && a.clientNames == b.clientNames && a.help == b.help
            && a.tls == b.tls
    }

    /// A command line that cannot be used (GatewayKit's, shared by every daemon).
    public typealias UsageError = GatewayKit.UsageError

    /// Every option: letters by their long names, and the long names without a letter.
    static let table = OptionTable(
        program: "tcpproxy",
        flags: [
            "h": "help", "D": "nodaemonize", "U": "debug", "d": "debug-trace", "y": "clear-environment",
            "z": "list",
        ],
        withArgument: [
            "u": "username", "g": "groupname", "C": "chroot", "P": "write-pid", "L": "log", "l": "local-addr",
            "t": "local-resolv", "p": "local-port", "r": "remote-addr", "R": "remote-resolv", "o": "remote-port",
            "s": "source-addr", "b": "buffer-size", "c": "config", "f": "config", "a": "acp", "v": "varprefix",
            "w": "writefile",
        ],
        longFlags: ["standalone", "no-client-names", "remote-tls", "remote-tls-insecure"],
        longWithArgument: [
            "bind", "logname", "timeout", "rules", "proxy-protocol", "tls-cert", "tls-key", "tls-ocsp",
            "tls-client-ca",
            "remote-tls-ca", "remote-tls-name", "remote-tls-cert", "remote-tls-key", "tls-protocols", "tls-ciphers",
        ])

    /// Parses the words after the program name.
    public static func parse(_ args: [String]) throws(UsageError) -> TCPProxyOptions {
        var o = TCPProxyOptions()
        let positional = try table.scan(args) { (name, value) throws(UsageError) in try o.set(name, value) }
        if let first = positional.first {
            o.server = first
            o.serverArguments = Array(positional.dropFirst())
            if !o.serverArguments.isEmpty && !(first.hasPrefix("/") || first.hasPrefix(".")) {
                throw UsageError("unexpected argument \"\(o.serverArguments[0])\" after the server \(first)")
            }
        }
        if o.debug {
            o.daemonize = false
            o.logTargets.append(LogTarget(kind: .stdout, level: .debug))
        }
        if o.bind != nil && o.server == nil {
            throw UsageError("--bind needs a server: tcpproxy --bind [interface:]port host[:port]|/path/to/handler")
        }
        if o.localPort != nil && (o.remoteAddress == nil || o.remotePort == nil) {
            throw UsageError("-p/--local-port needs -r/--remote-addr and -o/--remote-port")
        }
        do { _ = try o.tls.settings() } catch { throw UsageError("--" + error.description) }
        if o.localPort != nil && o.server != nil {
            throw UsageError("give either -p/--local-port with -r and -o, or a server argument, not both")
        }
        return o
    }

    private mutating func set(_ name: String, _ value: String?) throws(UsageError) {
        let v = value ?? ""
        switch name {
        case "help": help = true
        case "nodaemonize": daemonize = false
        case "debug": debug = true
        case "clear-environment": clearEnvironment = true
        case "debug-trace": debugTrace = true
        case "list": list += 1
        case "standalone": standalone = true
        case "no-client-names": clientNames = false
        case "username": username = v
        case "groupname": groupname = v
        case "chroot": chroot = v
        case "write-pid": pidFile = v
        case "log":
            do { logTargets.append(try LogTarget.parse(v, defaultName: "tcpproxy")) } catch {
                throw UsageError(error.description)
            }
        case "local-addr": localAddress = v
        case "local-resolv": localResolv = try Self.family(v, name)
        case "local-port": localPort = v
        case "remote-addr": remoteAddress = v
        case "remote-resolv": remoteResolv = try Self.family(v, name)
        case "remote-port": remotePort = v
        case "source-addr": sourceAddress = v
        case "buffer-size":
            guard let n = Int(v), n > 0, n <= 1 << 30 else {
                throw UsageError("--buffer-size needs a size in bytes from 1 to 1073741824, not \"\(v)\"")
            }
            bufferSize = n
        case "config": configPath = v
        case "acp": accessControlProgram = v
        case "varprefix": variablePrefix = v
        case "writefile": writefile = v
        case "bind":
            if let colon = v.lastIndex(of: ":"), !v.hasSuffix("]") {
                var interface = String(v[..<colon])
                if interface.hasPrefix("[") && interface.hasSuffix("]") {
                    interface = String(interface.dropFirst().dropLast())
                }
                bind = (interface.isEmpty ? nil : interface, String(v[v.index(after: colon)...]))
            } else {
                bind = (nil, v)
            }
            standalone = true
        case "logname": logname = v
        case "timeout":
            guard let n = Int(v), n >= 0 else { throw UsageError("--timeout needs seconds (0 for none), not \"\(v)\"") }
            timeout = n
        case "rules": rules = v
        case "remote-tls": tls.remote = tls.remote ?? .verified
        case "remote-tls-insecure": tls.remote = .insecure
        case _ where TLSDirectives.names.contains(name):
            do { try tls.set(name, v) } catch { throw UsageError("--" + error.description) }
        case "proxy-protocol":
            switch v {
            case "v1", "1": proxyProtocol = .v1
            case "v2", "2": proxyProtocol = .v2
            default: throw UsageError("--proxy-protocol takes v1 or v2, not \"\(v)\"")
            }
        default: throw UsageError("unknown option --\(name)")
        }
    }

    private static func family(_ v: String, _ name: String) throws(UsageError) -> AddressFamilyPreference {
        switch v {
        case "ipv4", "4": return .ipv4
        case "ipv6", "6": return .ipv6
        default: throw UsageError("--\(name) takes ipv4, 4, ipv6 or 6, not \"\(v)\"")
        }
    }
}
