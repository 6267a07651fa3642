import GatewayKit
import TLS

/// pop3.proxy's command line: the manual's letters and the long options Bastion adds.
///
/// `pop3.proxy [options] server`, where `server` is `host[:port]` (port 110 when omitted, 995
/// with `--server-tls pop3s`; IPv6 as `[addr]:port`) or `-` for none; with `-e` it may be left
/// out. `-D` makes a daemon on port 110 of every address (995 with `--pop3s`); `-D -D` (or `-DD`) takes the listening `[interface:]port` as
/// the first operand. Options come before the operands.
public struct POP3ProxyOptions: Equatable, Sendable {
    /// Where the server is: a host (name or address, no brackets) and a port.
    public struct Server: Equatable, Sendable {
        public var host: String
        public var port: UInt16
        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }
    }

    /// Where clamd listens: `host:port` over TCP or the path of its unix socket.
    public enum Clamd: Equatable, Sendable {
        case tcp(Server)
        case unix(String)
    }

    /// `-a`: the access control program.
    public var accessControlProgram: String?
    /// `-c`: the characters that separate user and server (`@`).
    public var delimiters: [UInt8] = [UInt8(ascii: "@")]
    /// `-e`: the client may select the server.
    public var serverSelection = false
    /// `-l`: the directory of last-login files.
    public var clientLogDirectory: String?
    /// `-m`: fewer log lines.
    public var quiet = false
    /// `-q`: the source address of the connection to the server.
    public var sourceAddress: IPAddress?
    /// `-s`: the servers a client may select.
    public var serverList: ServerList?
    /// `-t`: seconds of inactivity before a session ends (0: none).
    public var timeout = 600
    /// `-u`: the user to serve as when started as root.
    public var user = "nobody"
    /// `-v`: the prefix of the acp's variables.
    public var variablePrefix = "PROXY_"
    /// `-z`: scan every message with clamd.
    public var scan = false
    /// `-D` given once or twice.
    public var daemon = 0
    /// `-d`: debug (log to stderr, stay in the foreground).
    public var debug = false
    /// `-D -D`: where to listen (nil: port 110 of every address).
    public var listen: Listen?
    /// The server operand (nil: `-`, none; the client must name one).
    public var server: Server?
    /// `--clamd`.
    public var clamd = Clamd.tcp(Server(host: "127.0.0.1", port: 3310))
    /// `--rules`: a tcprules database applied to the client.
    public var rules: String?
    /// `--pid-file`.
    public var pidFile: String?
    /// `--log` targets (none given: syslog, facility mail, or stderr with `-d`).
    public var logTargets: [LogTarget] = []
    /// `--no-scan-header`: deliver a clean message without the X-Proxy-Scanned line.
    public var scanHeader = true
    /// `--scan-limit`: the largest message scanned, in bytes (nil: no limit).
    public var scanLimit: Int?
    /// `--scan-limit-pass`: pass larger messages unscanned (logged) instead of refusing them.
    public var scanLimitPass = false
    /// `--help`.
    public var help = false

    /// How TLS goes toward the server (`--server-tls`).
    public enum ServerTLS: String, Equatable, Sendable {
        /// In the clear, as the original.
        case none
        /// STLS after the server's greeting (RFC 2595); a server that refuses it is a failed login.
        case stls
        /// Implicit TLS from the first byte (POP3S, port 995).
        case pop3s
    }

    /// `--tls-cert`, `--tls-key` and `--tls-ocsp`: the certificates shown to clients (STLS and
    /// `--pop3s`).
    public var tlsCertificates = TLSCertificateList()
    /// `--tls-protocols`, `--tls-ciphers`: both directions.
    public var tlsProtocols = TLSProtocols.default
    public var tlsCiphers = TLSCiphers.intermediate
    /// `--require-tls`: USER and PASS are refused before STLS.
    public var requireTLS = false
    /// `--pop3s`: clients speak TLS from the first byte.
    public var pop3s = false
    /// `--server-tls`.
    public var serverTLS = ServerTLS.none
    /// `--server-tls-ca`: the CA the server's certificate is verified against (else the system's).
    public var serverTLSCA: String?

    /// The TLS toward clients, when there is a certificate.
    public var clientTLSSettings: TLSServerSettings? {
        guard let files = try? tlsCertificates.files(), !files.isEmpty else { return nil }
        return TLSServerSettings(certificates: files, protocols: tlsProtocols, ciphers: tlsCiphers)
    }

    /// The TLS toward the server, verified (its name checked against the server as given).
    public var serverTLSSettings: TLSClientSettings? {
        guard serverTLS != .none else { return nil }
        return TLSClientSettings(ca: serverTLSCA, verify: true, protocols: tlsProtocols, ciphers: tlsCiphers)
    }

    /// The server's port when a server is named without one: 995 for POP3S, else 110.
    public var defaultServerPort: UInt16 { serverTLS == .pop3s ? 995 : 110 }

    /// The listening address of `-D -D`: an interface (nil: every address) and a port.
    public struct Listen: Equatable, Sendable {
        public var interface: String?
        public var port: UInt16
        public init(interface: String?, port: UInt16) {
            self.interface = interface
            self.port = port
        }
    }

    public init() {}

    /// A command line that cannot be used.
    public typealias UsageError = GatewayKit.UsageError

    static let table = OptionTable(
        program: "pop3.proxy",
        flags: ["e": "select-server", "m": "quiet", "z": "scan", "D": "daemon", "d": "debug"],
        withArgument: [
            "a": "acp", "c": "delimiters", "l": "client-log", "q": "source", "s": "servers", "t": "timeout",
            "u": "user", "v": "varprefix",
        ],
        longFlags: ["help", "no-scan-header", "scan-limit-pass", "require-tls", "pop3s"],
        longWithArgument: [
            "clamd", "rules", "pid-file", "log", "scan-limit", "tls-cert", "tls-key", "tls-ocsp", "tls-protocols",
            "tls-ciphers", "server-tls", "server-tls-ca",
        ])

    /// Parses the words after the program's name.
    public static func parse(_ args: [String]) throws(UsageError) -> POP3ProxyOptions {
        var o = POP3ProxyOptions()
        var operands = try table.scan(args) { (name, value) throws(UsageError) in try o.set(name, value ?? "") }
        if o.help { return o }
        if o.daemon >= 2 {
            guard !operands.isEmpty else {
                throw UsageError("-D -D needs the address to listen on: pop3.proxy -DD [interface:]port server")
            }
            o.listen = try listenOperand(operands.removeFirst())
        }
        if operands.count > 1 { throw UsageError("unexpected argument \"\(operands[1])\" after the server") }
        try o.checkTLS()
        if let operand = operands.first {
            o.server =
                operand == "-" ? nil : try serverOperand(operand, option: "server", defaultPort: o.defaultServerPort)
            if o.server == nil && !o.serverSelection {
                throw UsageError("server - (none) needs -e: without it no client can name one")
            }
        } else if !o.serverSelection {
            throw UsageError("no server given (pop3.proxy [options] server, or - with -e)")
        }
        if o.serverList != nil && !o.serverSelection {
            throw UsageError("-s lists the servers a client may select: it needs -e")
        }
        if o.scanLimitPass && o.scanLimit == nil { throw UsageError("--scan-limit-pass needs --scan-limit") }
        return o
    }

    /// The TLS options as a whole.
    private func checkTLS() throws(UsageError) {
        let files: [TLSCertificateFiles]
        do { files = try tlsCertificates.files() } catch { throw UsageError("--" + error.description) }
        if files.isEmpty && pop3s {
            throw UsageError("--pop3s needs --tls-cert and --tls-key: the certificate shown to clients")
        }
        if files.isEmpty && requireTLS {
            throw UsageError("--require-tls needs --tls-cert and --tls-key: clients get TLS by STLS")
        }
        if serverTLSCA != nil && serverTLS == .none {
            throw UsageError("--server-tls-ca verifies the server's certificate: it needs --server-tls stls or pop3s")
        }
    }

    private mutating func set(_ name: String, _ v: String) throws(UsageError) {
        switch name {
        case "select-server": serverSelection = true
        case "quiet": quiet = true
        case "scan": scan = true
        case "daemon": daemon += 1
        case "debug": debug = true
        case "help": help = true
        case "no-scan-header": scanHeader = false
        case "scan-limit-pass": scanLimitPass = true
        case "require-tls": requireTLS = true
        case "pop3s": pop3s = true
        case "tls-cert", "tls-key", "tls-ocsp":
            do { try tlsCertificates.add(name, v) } catch { throw UsageError("--" + error.description) }
        case "tls-protocols":
            do { tlsProtocols = try TLSProtocols(parsing: v) } catch { throw UsageError("--tls-protocols: \(error)") }
        case "tls-ciphers":
            do { tlsCiphers = try TLSCiphers(parsing: v) } catch { throw UsageError("--tls-ciphers: \(error)") }
        case "server-tls":
            guard let mode = ServerTLS(rawValue: v) else {
                throw UsageError("--server-tls takes none, stls or pop3s, not \"\(v)\"")
            }
            serverTLS = mode
        case "server-tls-ca":
            guard !v.isEmpty else { throw UsageError("--server-tls-ca needs the file of the CA's certificate") }
            serverTLSCA = v
        case "acp":
            guard !v.isEmpty else { throw UsageError("-a needs the path of the access control program") }
            accessControlProgram = v
        case "delimiters":
            guard !v.isEmpty else { throw UsageError("-c needs at least one delimiter character") }
            delimiters = Array(v.utf8)
        case "client-log":
            guard !v.isEmpty else { throw UsageError("-l needs a directory") }
            clientLogDirectory = v
        case "source":
            guard let address = IPAddress(v)?.unmapped else {
                throw UsageError("-q needs an IP address to connect from, not \"\(v)\"")
            }
            sourceAddress = address
        case "servers": serverList = ServerList(v)
        case "timeout":
            guard let seconds = Int(v), seconds >= 0, seconds <= 86_400 * 365 else {
                throw UsageError("-t needs a number of seconds (0 for none), not \"\(v)\"")
            }
            timeout = seconds
        case "user":
            guard !v.isEmpty else { throw UsageError("-u needs a user name") }
            user = v
        case "varprefix":
            guard !v.isEmpty, ChildEnvironment.isVariablePrefix(v) else {
                throw UsageError("-v needs a variable prefix of letters, digits and _, not \"\(v)\"")
            }
            variablePrefix = v
        case "clamd":
            if v.hasPrefix("/") {
                clamd = .unix(v)
            } else {
                clamd = .tcp(try Self.serverOperand(v, option: "--clamd", defaultPort: nil))
            }
        case "rules": rules = v
        case "pid-file": pidFile = v
        case "log":
            do { logTargets.append(try LogTarget.parse(v, defaultName: "pop3.proxy")) } catch {
                throw UsageError(error.description)
            }
        case "scan-limit":
            guard let bytes = Int(v), bytes > 0 else {
                throw UsageError("--scan-limit needs a size in bytes, not \"\(v)\"")
            }
            scanLimit = bytes
        default:
            throw UsageError("unknown option --\(name)")
        }
    }

    /// `host[:port]` (`[addr]:port` for IPv6); the port is 110 when omitted, or required
    /// when `defaultPort` is nil.
    static func serverOperand(
        _ text: String, option: String, defaultPort: UInt16? = 110
    ) throws(UsageError) -> Server {
        guard let (host, portText) = HostSyntax.split(text) else {
            throw UsageError("\(option): \"\(text)\" is not host[:port] (IPv6 as [address]:port)")
        }
        guard let portText else {
            guard let defaultPort else { throw UsageError("\(option): \"\(text)\" needs a port (host:port)") }
            return Server(host: host, port: defaultPort)
        }
        return Server(host: host, port: try port(portText, in: text, option: option))
    }

    /// `[interface:]port` of `-D -D`.
    static func listenOperand(_ text: String) throws(UsageError) -> Listen {
        if let (host, portText) = HostSyntax.split(text), let portText {
            return Listen(interface: host, port: try port(portText, in: text, option: "-D -D"))
        }
        return Listen(interface: nil, port: try port(text, in: text, option: "-D -D"))
    }

    static func port(_ text: String, in whole: String, option: String) throws(UsageError) -> UInt16 {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let port = Int(text), port >= 1, port <= 65535
        else { throw UsageError("\(option): \"\(whole)\": the port must be a number from 1 to 65535") }
        return UInt16(port)
    }
}
