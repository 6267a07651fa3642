import GatewayKit

/// sockd's command line: the manual's `-ver`, `-I` and `-i`, and the long options for what
/// CSTC's sockd fixed at compile time.
///
/// `sockd [-ver | -I | -i] [--config PATH] [--route PATH] [--listen [ADDRESS]:PORT]...
/// [--foreground] [--pid-file PATH] [--log TARGET]... [--user NAME] [--passwd FILE]
/// [--ident-timeout SECONDS] [--help]`. The manual's options exclude each other. sockd takes
/// no operands.
public struct SockdOptions: Equatable, Sendable {
    /// One `--listen`: an address (nil: every address, IPv6 and IPv4) and a port.
    public struct Listen: Equatable, Sendable {
        public var host: String?
        public var port: UInt16
        public init(host: String?, port: UInt16) {
            self.host = host
            self.port = port
        }
    }

    /// `-ver`: print what this sockd is and exit.
    public var version = false
    /// `-I` or `-i` (``IdentCheck``); a sockd.conf line may override it with `?=I`, `?=i`, `?=n`.
    public var identCheck = IdentCheck.off
    /// `--config` (nil: /etc/sockd.fc when it exists, else /etc/sockd.conf).
    public var config: String?
    /// `--route` (nil: /etc/sockd.fr when it exists, else /etc/sockd.route, when that exists).
    public var route: String?
    /// `--listen`, in order (none: port 1080 of every address).
    public var listen: [Listen] = []
    /// `--foreground`: stay attached to the terminal (stand-alone mode).
    public var foreground = false
    /// `--pid-file`.
    public var pidFile = "/run/sockd.pid"
    /// `--log` targets (none: syslog, facility daemon, ident sockd).
    public var logTargets: [LogTarget] = []
    /// `--user`: the user to serve as once the listeners are bound.
    public var user: String?
    /// `--passwd`: `user:HASH` lines; username/password then required.
    public var passwd: String?
    /// `--ident-timeout`: seconds to wait for the client's identd.
    public var identTimeout = 15
    /// `--help`.
    public var help = false

    public init() {}

    public static let defaultPort: UInt16 = 1080
    public static let frozenConfig = "/etc/sockd.fc"
    public static let textConfig = "/etc/sockd.conf"
    public static let frozenRoute = "/etc/sockd.fr"
    public static let textRoute = "/etc/sockd.route"

    static let table = OptionTable(
        program: "sockd",
        flags: ["I": "ident-strict", "i": "ident-lenient"],
        withArgument: [:],
        longFlags: ["foreground", "help"],
        longWithArgument: ["config", "route", "listen", "pid-file", "log", "user", "passwd", "ident-timeout"])

    /// Parses the words after the program's name.
    public static func parse(_ args: [String]) throws(UsageError) -> SockdOptions {
        var o = SockdOptions()
        var manual: [String] = []
        // `-ver` is one word, as in 1996, not -v -e -r.
        let words = args.filter { word in
            guard word == "-ver" else { return true }
            o.version = true
            manual.append(word)
            return false
        }
        let operands = try table.scan(words) { (name, value) throws(UsageError) in
            switch name {
            case "ident-strict":
                o.identCheck = .strict
                manual.append("-I")
            case "ident-lenient":
                o.identCheck = .lenient
                manual.append("-i")
            default: try o.set(name, value ?? "")
            }
        }
        if let operand = operands.first {
            throw UsageError("unexpected argument \"\(operand)\" (sockd takes options only; see sockd --help)")
        }
        if manual.count > 1 {
            throw UsageError("\(manual.joined(separator: " and ")): -ver, -I and -i may only be used one at a time")
        }
        return o
    }

    private mutating func set(_ name: String, _ v: String) throws(UsageError) {
        switch name {
        case "foreground": foreground = true
        case "help": help = true
        case "config":
            guard !v.isEmpty else { throw UsageError("--config needs a path") }
            config = v
        case "route":
            guard !v.isEmpty else { throw UsageError("--route needs a path") }
            route = v
        case "listen": listen.append(try Self.listenOperand(v))
        case "pid-file":
            guard !v.isEmpty else { throw UsageError("--pid-file needs a path") }
            pidFile = v
        case "log":
            do { logTargets.append(try LogTarget.parse(v, defaultName: "sockd")) } catch {
                throw UsageError(error.description)
            }
        case "user":
            guard !v.isEmpty else { throw UsageError("--user needs a user name") }
            user = v
        case "passwd":
            guard !v.isEmpty else { throw UsageError("--passwd needs the path of a user:hash file") }
            passwd = v
        case "ident-timeout":
            guard let seconds = Int(v), seconds >= 1, seconds <= 3600 else {
                throw UsageError("--ident-timeout needs a number of seconds from 1 to 3600, not \"\(v)\"")
            }
            identTimeout = seconds
        default:
            throw UsageError("unknown option --\(name)")
        }
    }

    /// `--listen`'s `[ADDRESS]:PORT`: `PORT` or `:PORT` alone for every address, `ADDRESS:PORT`,
    /// `[IPv6]:PORT`.
    static func listenOperand(_ text: String) throws(UsageError) -> Listen {
        let bare = text.hasPrefix(":") ? String(text.dropFirst()) : text
        if let port = Self.port(bare) { return Listen(host: nil, port: port) }
        guard let (host, portText) = HostSyntax.split(text), let portText, !host.isEmpty else {
            throw UsageError("--listen: \"\(text)\" is not [ADDRESS]:PORT (IPv6 as [address]:port)")
        }
        guard let port = Self.port(portText) else {
            throw UsageError("--listen: \"\(text)\": the port must be a number from 1 to 65535")
        }
        return Listen(host: host, port: port)
    }

    static func port(_ text: String) -> UInt16? {
        guard !text.isEmpty, text.utf8.count <= 5,
            text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let port = Int(text), port >= 1, port <= 65535
        else { return nil }
        return UInt16(port)
    }

    /// The configuration file to read: `--config`, else the frozen file when it exists,
    /// else the text file.
    public func configPath(exists: (String) -> Bool) -> String {
        config ?? (exists(Self.frozenConfig) ? Self.frozenConfig : Self.textConfig)
    }

    /// The route file to read, if any: `--route` (which must then exist), else the frozen file
    /// or the text file, whichever exists first; nil when neither does (single-homed).
    public func routePath(exists: (String) -> Bool) -> String? {
        if let route { return route }
        return [Self.frozenRoute, Self.textRoute].first(where: exists)
    }

    /// What `-ver` prints: the manual's five facts (version, SOCKS versions, not SOCKSified,
    /// stand-alone and inetd, RBIND) and the route file in use, if any.
    public static func versionText(route: String?) -> String {
        """
        sockd (Bastion) \(BastionVersion.string)
        SOCKS protocol versions 4, 4a and 5
        not SOCKSified
        runs stand-alone or from inetd
        supports RBIND (BIND) and UDP ASSOCIATE
        \(route.map { "route file \($0) in use (multi-homed)" } ?? "no route file in use (single-homed)")

        """
    }
}
